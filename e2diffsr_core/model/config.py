"""Model configuration and presets. A checkpoint carries its config, so a model file rebuilds itself."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class ModelConfig:
    # first stage: DPEncoder (6-ch input) and DPESR decoder
    embed_dim: int = 4
    enc_ch: int = 64
    enc_ch_mult: tuple[int, ...] = (1, 2, 2, 4)
    enc_num_res_blocks: int = 2
    dec_ch: int = 64
    dec_ch_mult: tuple[int, ...] = (1, 1, 1, 1)
    dec_num_res_blocks: int = 2
    num_sr_modules: tuple[int, ...] = (12, 12, 12, 12)
    csum_hidden: int = 256
    csum_scale_hidden: int = 64
    # second stage: CondNet and UNet
    cond_ch: int = 64
    cond_ch_mult: tuple[int, ...] = (1, 2, 2, 4)
    cond_num_res_blocks: int = 2
    unet_channels: int = 64
    unet_channel_mult: tuple[int, ...] = (1, 2, 2, 4)
    unet_num_res_blocks: int = 2
    unet_attention_resolutions: tuple[int, ...] = (8,)
    unet_head_channels: int = 32
    timesteps: int = 4
    linear_start: float = 0.1
    linear_end: float = 0.99
    # Variants. The defaults are what the released checkpoints need; the others are the paper's text
    # (reference README section 3) or its ablations (paper section V).
    variance: str = "posterior"        # "posterior" (release) | "beta" (paper Algorithm 2)
    unet_scale_input: str = "floor"    # "floor": truncated height ratio (release) | "float": s itself
    modulation: str = "scale_aware"    # "scale_aware" | "concat" (Model-III)
    prior_branch: bool = True          # False: Model-I, SR branch only
    sr_branch: bool = True             # False: Model-II, no FRUs
    regularizer: str = "kl"            # "kl" (release) | "vq" (ablation; training only)
    max_scale: float = 16.0            # largest scale accepted (trained range is 1..8)
    notes: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**kwargs)

    def replace(self, **kw) -> ModelConfig:
        return dataclasses.replace(self, **kw)


PRESETS: dict[str, ModelConfig] = {
    # The released full-size model (configs first_stage_kl_v6 / second_stage_van_v4).
    "paper": ModelConfig(),
    # CPU-friendly model of the same architecture: narrower SR branch and CSUM, fewer IMDBs, narrow UNet.
    "lite": ModelConfig(
        enc_ch=32, enc_ch_mult=(1, 2, 2, 2), enc_num_res_blocks=1,
        dec_ch=32, dec_num_res_blocks=1, num_sr_modules=(2, 2, 2, 2), csum_hidden=64,
        cond_ch=32, cond_ch_mult=(1, 2, 2, 2), cond_num_res_blocks=1,
        unet_channels=32, unet_channel_mult=(1, 2, 2, 4), unet_num_res_blocks=1,
    ),
    # For tests: the golden fixture's tiny model, except that the UNet is 64 wide from its second level, so
    # that a 1 x 1 deepest level (latents up to 8 a side) still has two values per GroupNorm group.
    "tiny": ModelConfig(
        enc_ch=32, enc_ch_mult=(1, 1, 1, 1), enc_num_res_blocks=1,
        dec_ch=32, dec_num_res_blocks=1, num_sr_modules=(1, 1, 1, 1),
        cond_ch=32, cond_ch_mult=(1, 1, 1, 1), cond_num_res_blocks=1,
        unet_channels=32, unet_channel_mult=(1, 2, 2, 2), unet_num_res_blocks=1,
    ),
}


def preset(name: str) -> ModelConfig:
    try:
        return dataclasses.replace(PRESETS[name])
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
