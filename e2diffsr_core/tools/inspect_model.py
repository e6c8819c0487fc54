"""Parameter counts per paper component and FLOPs per output pixel (for `info` and the presets' budget)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..model import E2DiffSR, Geometry


def _count(*mods: nn.Module) -> int:
    return sum(p.numel() for m in mods for p in m.parameters())


def parameter_counts(model: E2DiffSR) -> dict[str, int]:
    fs = model.first_stage_model
    dec = fs.decoder
    prior = _count(dec.conv_in, dec.mid) + sum(_count(g.block, g.transfer) for g in dec.up)
    modulation = sum(_count(g.modulation) for g in dec.up)
    sr = _count(dec.head, dec.FRUList)
    csum = _count(dec.upsampler)
    counts = {
        "DPEncoder": _count(fs.encoder, fs.quant_conv),
        "DPDecoder_prior_branch": prior,
        "scale_aware_modulation": modulation,
        "SR_branch": sr,
        "CSUM": csum,
        "post_quant_conv": _count(fs.post_quant_conv),
        "decoder_unused_style": _count(dec.style),
        "CondNet": _count(model.cond_stage_model),
        "UNet": _count(model.unet),
    }
    counts["decoder_total"] = _count(dec)
    counts["inference_total"] = _count(model.cond_stage_model, model.unet, dec, fs.post_quant_conv)
    return counts


@torch.no_grad()
def flops_per_output_pixel(model: E2DiffSR, lr_side: int = 32, scale: float = 4.0) -> dict[str, float]:
    """Multiply-adds x 2 of every conv/linear/attention matmul in one inference, per output pixel.

    Measured with hooks on a real forward pass (CondNet, T UNet steps, decoder) at LR lr_side^2.
    """
    totals: dict[str, float] = {"CondNet": 0.0, "UNet": 0.0, "decoder": 0.0}
    hooks = []

    def hook_for(part):
        def hook(mod, inp, out):
            if isinstance(mod, nn.Conv2d | nn.Conv1d):
                k = mod.weight[0].numel()  # in/groups * kernel
                totals[part] += 2.0 * k * out.numel()
            elif isinstance(mod, nn.Linear):
                totals[part] += 2.0 * mod.in_features * out.numel()
        return hook

    parts = {"CondNet": model.cond_stage_model, "UNet": model.unet, "decoder": model.first_stage_model.decoder}
    for part, mod in parts.items():
        for m in mod.modules():
            if isinstance(m, nn.Conv2d | nn.Conv1d | nn.Linear):
                hooks.append(m.register_forward_hook(hook_for(part)))
    out = (int(lr_side * scale), int(lr_side * scale))
    lr = torch.zeros(1, 3, lr_side, lr_side, device=next(model.parameters()).device)
    try:
        model.sample(lr, Geometry.whole((lr_side, lr_side), out), generator=torch.Generator().manual_seed(0))
    finally:
        for h in hooks:
            h.remove()
    pixels = out[0] * out[1]
    res = {k: v / pixels for k, v in totals.items()}
    res["total"] = sum(res.values())
    return res


def _conv_flops(args, out) -> int:
    x, w, transposed, groups = args[0], args[1], bool(args[6]), int(args[8])
    kernel = math.prod(w.shape[2:])
    if transposed:  # weight [Cin, Cout/groups, k...]: every input pixel meets every kernel tap
        return 2 * x.shape[0] * math.prod(x.shape[1:]) * w.shape[1] * kernel
    return 2 * math.prod(out.shape) * (x.shape[1] // groups) * kernel


def _attention_flops(args, _out) -> int:
    q, k, v = args[0], args[1], args[2]
    return 2 * math.prod(q.shape[:-1]) * k.shape[-2] * (q.shape[-1] + v.shape[-1])


_aten = torch.ops.aten
#: aten operators that carry nearly all the arithmetic, and their FLOPs (2 per multiply-add) from shapes.
_FLOPS = {
    _aten.convolution: _conv_flops,
    _aten.mm: lambda a, o: 2 * a[0].shape[0] * a[0].shape[1] * a[1].shape[1],
    _aten.addmm: lambda a, o: 2 * a[1].shape[0] * a[1].shape[1] * a[2].shape[1],
    _aten.bmm: lambda a, o: 2 * a[0].shape[0] * a[0].shape[1] * a[0].shape[2] * a[1].shape[2],
    _aten.baddbmm: lambda a, o: 2 * a[1].shape[0] * a[1].shape[1] * a[1].shape[2] * a[2].shape[2],
    **{getattr(_aten, name): _attention_flops for name in (
        "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_cudnn_attention")
       if hasattr(_aten, name)},
}


class FlopCount(TorchDispatchMode):
    """FLOPs of what runs inside it (convolutions, matrix products, attention), from shapes alone: works on
    the meta device. torch.utils.flop_counter counts the same operators (tests/test_flops.py) but imports
    triton, which brings down a QGIS process that has Mesa's LLVM loaded; this imports nothing more."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        count = _FLOPS.get(func.overloadpacket)
        if count is not None:
            self.total += int(count(args, out))
        return out
