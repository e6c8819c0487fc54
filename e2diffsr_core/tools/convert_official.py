"""Conversion of the authors' released LDCSR Lightning checkpoints into our self-describing model file.

Every key is mapped (the first stage's training-loss keys aside); a missing or unexpected key stops the
conversion. The UNet takes the EMA weights, as the authors' inference does.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import load_state, safe_load, save_model
from ..errors import E2DiffSRError
from ..model import E2DiffSR, ModelConfig

SCHEDULE_KEYS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)


def _official_to_ours(key: str) -> str | None:
    """Name in our model of a key of the released second-stage checkpoint (None: not a model weight)."""
    if key in SCHEDULE_KEYS:
        return f"schedule.{key}"
    if key == "scale_factor":
        return key
    if key.startswith("first_stage_model.") or key.startswith("cond_stage_model."):
        for part in (".condition_scale1.", ".condition_scale2."):
            if part in key:
                head, tail = key.split(part)
                return f"{head}.modulation{part}{tail}"
        return key
    return None


def _ema_name(our_unet_key: str) -> str:
    """model_ema naming: UNet key without the leading 'model.' and every '.' removed."""
    return "model_ema." + ("diffusion_model." + our_unet_key[len("unet."):]).replace(".", "")


def _state_dict_of(obj: dict, path) -> dict:
    sd = obj.get("state_dict", obj)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise E2DiffSRError(f"{path} has no 'state_dict' of tensors; is it a Lightning checkpoint of LDCSR?")
    return sd


def infer_official_config(sd: dict) -> ModelConfig:
    """Our config for a released state dict: widths and depths read from the tensor shapes."""
    def shape(k):
        return tuple(sd[k].shape)

    def levels(prefix):
        return sorted({int(k[len(prefix):].split(".")[0]) for k in sd if k.startswith(prefix)})

    def blocks(prefix):
        return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})

    def enc(prefix):
        ch = shape(f"{prefix}conv_in.weight")[0]
        mult = tuple(shape(f"{prefix}down.{i}.block.0.conv1.weight")[0] // ch for i in levels(f"{prefix}down."))
        return ch, mult, blocks(f"{prefix}down.0.block.")

    fs = "first_stage_model."
    enc_ch, enc_mult, enc_nb = enc(fs + "encoder.")
    cond_ch, cond_mult, cond_nb = enc("cond_stage_model.")
    dec_ch = shape(fs + "decoder.head.weight")[0]
    ups = levels(fs + "decoder.up.")
    dec_mult = tuple(shape(f"{fs}decoder.up.{i}.block.0.conv1.weight")[0] // dec_ch for i in ups)
    frus = levels(fs + "decoder.FRUList.")
    u = "model.diffusion_model."
    mc = shape(u + "input_blocks.0.0.weight")[0]
    n_in = len(levels(u + "input_blocks."))
    n_levels = sum(1 for i in levels(u + "input_blocks.") if f"{u}input_blocks.{i}.0.op.weight" in sd) + 1
    nrb = (n_in - 1 - (n_levels - 1)) // n_levels
    mults, i = [], 1
    for _level in range(n_levels):
        mults.append(shape(f"{u}input_blocks.{i}.0.in_layers.2.weight")[0] // mc)
        i += nrb + 1
    attn_ds = []
    i, ds = 1, 1
    for _level in range(n_levels):
        if f"{u}input_blocks.{i}.1.qkv.weight" in sd:
            attn_ds.append(ds)
        i += nrb + 1
        ds *= 2
    return ModelConfig(
        embed_dim=shape(fs + "post_quant_conv.weight")[0],
        enc_ch=enc_ch, enc_ch_mult=enc_mult, enc_num_res_blocks=enc_nb,
        dec_ch=dec_ch, dec_ch_mult=dec_mult, dec_num_res_blocks=blocks(fs + "decoder.up.0.block."),
        num_sr_modules=tuple(blocks(f"{fs}decoder.FRUList.{k}.IMDB.") for k in frus),
        csum_hidden=shape(fs + "decoder.upsampler.fuse.0.weight")[0],
        csum_scale_hidden=shape(fs + "decoder.upsampler.scale_aware_layer.0.weight")[0],
        cond_ch=cond_ch, cond_ch_mult=cond_mult, cond_num_res_blocks=cond_nb,
        unet_channels=mc, unet_channel_mult=tuple(mults), unet_num_res_blocks=nrb,
        unet_attention_resolutions=tuple(attn_ds),
        timesteps=shape("betas")[0],
    )


def convert_official_state(second: dict, first: dict | None = None, use_ema: bool = True) -> tuple[E2DiffSR, dict]:
    """Build our model from the released state dicts; every key is accounted for or the call fails."""
    required = ("first_stage_model.post_quant_conv.weight", "model.diffusion_model.input_blocks.0.0.weight",
                "cond_stage_model.conv_in.weight", "betas", "scale_factor")
    absent = [k for k in required if k not in second]
    if absent:
        raise E2DiffSRError(f"not a second-stage LDCSR checkpoint: missing {', '.join(absent)}")
    cfg = infer_official_config(second)
    # The first stage's own checkpoint must agree with the copy inside the second stage (which wins).
    if first is not None:
        for k, v in first.items():
            if k.startswith("loss."):
                continue
            twin = "first_stage_model." + k
            if twin not in second:
                raise E2DiffSRError(f"first-stage key {k} has no counterpart in the second-stage checkpoint")
            if tuple(second[twin].shape) != tuple(v.shape):
                raise E2DiffSRError(f"first-stage key {k}: shape {tuple(v.shape)} differs from the second stage")
    model = E2DiffSR(cfg)
    own = model.state_dict()
    unet_keys = [k for k in own if k.startswith("unet.")]
    state, used = {}, set()
    for k, v in second.items():
        ours = _official_to_ours(k)
        if ours is not None:
            state[ours] = v
            used.add(k)
    ema_missing = []
    for k in unet_keys:
        raw = "model.diffusion_model." + k[len("unet."):]
        ema = _ema_name(k)
        if raw not in second:
            raise E2DiffSRError(f"second-stage checkpoint lacks the UNet weight {raw}")
        used.add(raw)
        if ema in second:
            used.add(ema)
            if tuple(second[ema].shape) != tuple(second[raw].shape):
                raise E2DiffSRError(
                    f"EMA weight {ema} has shape {tuple(second[ema].shape)}, not {tuple(second[raw].shape)}")
        else:
            ema_missing.append(ema)
        state[k] = second[ema] if (use_ema and ema in second) else second[raw]
    if use_ema and ema_missing:
        raise E2DiffSRError(f"second-stage checkpoint lacks {len(ema_missing)} EMA weights (e.g. {ema_missing[0]})")
    meta = {}
    for k in ("model_ema.decay", "model_ema.num_updates"):
        if k in second:
            used.add(k)
            meta[k.split(".")[1]] = second[k].item()
    leftover = sorted(set(second) - used)
    if leftover:
        raise E2DiffSRError(f"unexpected keys in the second-stage checkpoint: {len(leftover)} "
                            f"(e.g. {', '.join(leftover[:3])})")
    load_state(model, state, "converted checkpoint")
    meta.update(weights="ema" if use_ema else "raw", scale_factor=float(second["scale_factor"]))
    return model.eval(), meta


def convert_official(second_stage: str, out: str, first_stage: str | None = None, use_ema: bool = True) -> dict:
    """CLI back end of ``convert-official``: Lightning checkpoints in, one self-describing model file out."""
    second = _state_dict_of(safe_load(second_stage, "second-stage checkpoint"), second_stage)
    first = None
    if first_stage:
        first = _state_dict_of(safe_load(first_stage, "first-stage checkpoint"), first_stage)
    model, meta = convert_official_state(second, first, use_ema)
    meta.update(source="LDCSR (MoooJianG/LDCSR) release, converted", second_stage=Path(second_stage).name)
    save_model(model, out, meta)
    return meta
