"""Training configuration: a TOML file with [model], [data], [stage1], [stage2] and [run] tables.

Every key is checked: an unknown key or a value of the wrong type stops the run with a one-line message
naming it. ``--set table.key=value`` on the command line overrides single values (TOML syntax).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import E2DiffSRError
from ..model.config import ModelConfig, preset

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None


@dataclass
class DataConfig:
    scale_min: float = 1.0            # scales are drawn per batch from U(scale_min, scale_max) (README 1.5)
    scale_max: float = 8.0
    num_workers: int = 4              # DataLoader worker processes (0: load in the main process)
    bands: list = field(default_factory=list)  # 1-based bands for the model's R, G, B; []: by colour interpretation
    min_valid: float = 0.99           # share of valid pixels a crop needs (nodata, masks, alpha 0 are invalid)
    val_max_images: int = 8           # validation images (from the split's "val" list, else the first ones)
    val_scales: list = field(default_factory=lambda: [2.0, 3.4, 4.0])  # every validation crop at each scale
    val_size: int = 256               # one fixed crop of each validation HR image (multiple of 8)
    val_grid_images: int = 4          # images shown in the PNG grid


@dataclass
class Stage1Config:
    """Autoencoder pre-training (paper Eq. 12; the authors' LPIPSWithDiscriminator, README 1.5)."""
    batch_size: int = 4
    lr_patch: int = 48                # LR patch side; the HR crop is int(lr_patch * s)
    max_steps: int = 100000
    base_lr: float = 4.5e-6           # learning rate = base_lr x batch size x GPUs (as the authors)
    scale_lr: bool = True
    lr_schedule: str = "constant"     # "constant" (authors) | "cosine": to 0 over the run (steps or minutes)
    warmup_steps: int = 0             # linear warm-up from 0 over this many steps
    betas: list = field(default_factory=lambda: [0.5, 0.9])
    grad_clip: float = 0.0            # 0: no clipping (the authors clip nothing)
    sample_posterior: bool = True
    l1_weight: float = 1.0
    perceptual_weight: float = 1.0    # LPIPS; 0 turns it off (needed where no VGG16 weights exist)
    perceptual_net: str = "vgg"
    perceptual_weights: str = ""      # torchvision VGG16/AlexNet weights file; "" looks in the torch hub cache
    lpips_random_backbone: bool = False  # tests only: a random backbone makes LPIPS meaningless
    kl_weight: float = 1e-6
    codebook_weight: float = 1.0      # weight of the VQ loss when model.regularizer = "vq"
    disc_weight: float = 0.5
    disc_start: int = 50001
    disc_layers: int = 3
    disc_channels: int = 64


@dataclass
class Stage2Config:
    """Latent diffusion training (paper Eq. 13; README 1.5)."""
    batch_size: int = 8
    hr_crop: int = 256                # HR crop; the LR is int(hr_crop / s)
    max_steps: int = 100000
    base_lr: float = 1e-5
    scale_lr: bool = True
    lr_schedule: str = "constant"     # "constant" (authors) | "cosine": to 0 over the run (steps or minutes)
    warmup_steps: int = 0             # linear warm-up from 0 over this many steps
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 0.0
    loss_type: str = "l2"             # "l2" (the authors' code) | "l1" (the paper's Eq. 13)
    diffusion_weight: float = 1.0     # 0: ablation without the diffusion loss (UNet not trained)
    distill_weight: float = 1.0       # 0: ablation without the distillation loss on CondNet
    timestep_sampling: str = "chain"  # "chain": unrolled T-step chain (authors) | "random": DDPM eps loss
    ema_decay: float = 0.9999
    scale_factor: float = 0.0         # 0: 1 / std of the first batch's latents (authors); > 0: fixed


@dataclass
class RunConfig:
    seed: int = 23
    device: str = "auto"
    amp: str = "bf16"                 # "bf16": bf16 autocast on CUDA | "none"; always fp32 on CPU
    channels_last: bool = False
    log_every: int = 50
    val_every: int = 2000
    ckpt_every: int = 2000
    keep_checkpoints: int = 3         # numbered checkpoints kept in checkpoints/ (0: keep all)
    max_minutes: float = 0.0          # 0: no time limit; otherwise stop cleanly and write model.pt
    max_bad_steps: int = 20           # stop after this many consecutive non-finite steps
    progress: bool = True
    tensorboard: bool = True


@dataclass
class TrainConfig:
    model: ModelConfig
    data: DataConfig
    stage1: Stage1Config
    stage2: Stage2Config
    run: RunConfig
    preset: str = "paper"
    source: str = ""

    def to_dict(self) -> dict:
        d = {name: dataclasses.asdict(getattr(self, name)) for name in ("data", "stage1", "stage2", "run")}
        d["model"] = {"preset": self.preset, **self.model.to_dict()}
        return d


TABLES = {"data": DataConfig, "stage1": Stage1Config, "stage2": Stage2Config, "run": RunConfig}
CHOICES = {
    ("stage2", "loss_type"): ("l2", "l1"),
    ("stage2", "timestep_sampling"): ("chain", "random"),
    ("stage1", "lr_schedule"): ("constant", "cosine"),
    ("stage2", "lr_schedule"): ("constant", "cosine"),
    ("run", "amp"): ("bf16", "none"),
    ("stage1", "perceptual_net"): ("vgg", "alex"),
    ("model", "modulation"): ("scale_aware", "concat"),
    ("model", "regularizer"): ("kl", "vq"),
    ("model", "variance"): ("posterior", "beta"),
    ("model", "unet_scale_input"): ("floor", "float"),
}


def _check_type(where: str, default, value):
    """Accept a value of the default's type (an int where a float is expected); lists become tuples."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        value = type(default)(value) if ok else value
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise E2DiffSRError(f"{where} must be {type(default).__name__}, got {value!r}")
    return value


def _fill(cls, defaults, table: dict, section: str, src: str):
    names = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
        if key not in names:
            raise E2DiffSRError(f"{src}: unknown key '{key}' in [{section}] (known: {', '.join(sorted(names))})")
        where = f"{src}: [{section}] {key}"
        value = _check_type(where, getattr(defaults, key), value)
        allowed = CHOICES.get((section, key))
        if allowed and value not in allowed:
            raise E2DiffSRError(f"{where} must be one of {', '.join(allowed)}, got {value!r}")
        values[key] = value
    return dataclasses.replace(defaults, **values)


def parse_config(raw: dict, src: str = "config") -> TrainConfig:
    unknown = sorted(set(raw) - set(TABLES) - {"model"})
    if unknown:
        raise E2DiffSRError(f"{src}: unknown table [{unknown[0]}] (known: model, {', '.join(TABLES)})")
    model_table = dict(raw.get("model", {}))
    name = model_table.pop("preset", "paper")
    try:
        base = preset(name)
    except ValueError as e:
        raise E2DiffSRError(f"{src}: [model] preset: {e}") from None
    model = _fill(ModelConfig, base, model_table, "model", src)
    parts = {k: _fill(cls, cls(), raw.get(k, {}), k, src) for k, cls in TABLES.items()}
    cfg = TrainConfig(model=model, preset=name, source=src, **parts)
    validate(cfg, src)
    return cfg


def validate(cfg: TrainConfig, src: str) -> None:
    d, s1, s2 = cfg.data, cfg.stage1, cfg.stage2
    if not 1.0 <= d.scale_min <= d.scale_max:
        raise E2DiffSRError(f"{src}: need 1 <= [data] scale_min <= scale_max, got {d.scale_min}..{d.scale_max}")
    for where, v in (("[stage1] batch_size", s1.batch_size), ("[stage2] batch_size", s2.batch_size),
                     ("[stage1] lr_patch", s1.lr_patch)):
        if v < 1:
            raise E2DiffSRError(f"{src}: {where} must be at least 1, got {v}")
    if s2.hr_crop < 40 or d.val_size < 40:
        raise E2DiffSRError(f"{src}: [stage2] hr_crop and [data] val_size must be at least 40 px (UNet padding)")
    if not 0.0 <= d.min_valid <= 1.0:
        raise E2DiffSRError(f"{src}: [data] min_valid must be a share from 0 to 1, got {d.min_valid}")
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in d.bands) or len(d.bands) > 3:
        raise E2DiffSRError(f"{src}: [data] bands must be at most three band numbers from 1, e.g. [3, 2, 1], "
                            f"got {d.bands}")
    if not d.val_scales or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 1 <= v <= 16
                               for v in d.val_scales):
        raise E2DiffSRError(f"{src}: [data] val_scales must be scales from 1 to 16, e.g. [2, 3.4, 4], "
                            f"got {d.val_scales}")
    if cfg.run.keep_checkpoints < 0:
        raise E2DiffSRError(f"{src}: [run] keep_checkpoints must be 0 (keep all) or more")
    if s2.diffusion_weight == 0 and s2.distill_weight == 0:
        raise E2DiffSRError(f"{src}: [stage2] diffusion_weight and distill_weight are both 0: nothing to train")


def parse_override(text: str) -> tuple[str, str, object]:
    """'table.key=value' with a TOML value (bare words are taken as strings)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise E2DiffSRError(f"--set expects TABLE.KEY=VALUE, got {text!r}")
    lhs, rhs = text.split("=", 1)
    table, key = lhs.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {rhs.strip()}")["v"]
    except Exception:
        value = rhs.strip()
    return table, key, value


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise E2DiffSRError(f"config file not found: {path}")
    if tomllib is None:
        raise E2DiffSRError("reading TOML needs Python 3.11 or the 'tomli' package (pip install tomli)")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise E2DiffSRError(f"{path} is not valid TOML: {e}") from None
    for text in overrides or []:
        table, key, value = parse_override(text)
        raw.setdefault(table, {})[key] = value
    return parse_config(raw, path.name)
