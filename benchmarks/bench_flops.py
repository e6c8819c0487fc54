"""Arithmetic of the tiled engine against one whole-image pass of the model (JSON).

    .venv/bin/python benchmarks/bench_flops.py [--lr-side 512] [--scale 4] [--models bundled,paper]
                                               [--tiles 0,1024] [--exact]

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matrix products and
attention: what dominates the model). The whole-image pass (``model.sample``) runs on the meta device, so it
needs no memory whatever the size. The engine (``superresolve_array``, reading and writing numpy arrays) runs
on the CPU; unless ``--exact`` is given the counted operators only produce zeros of the right shape (the
count depends on shapes alone), so that a 2048 x 2048 output of ``paper`` is counted in seconds. ``--exact``
runs every operator for real (use small sizes) as a check that both modes count the same.
Tile 0 is the engine's own choice on the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2diffsr_core.api import build_model, open_model  # noqa: E402
from e2diffsr_core.engine import superresolve_array  # noqa: E402
from e2diffsr_core.model import Geometry  # noqa: E402


class ShapesOnly(TorchDispatchMode):
    """Counted operators return zeros of their real output shape: their FLOPs depend on shapes only."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket in flop_registry:
            meta = torch.utils._pytree.tree_map(
                lambda a: a.to("meta") if isinstance(a, torch.Tensor) else a, (args, kwargs))
            out = func(*meta[0], **meta[1])
            dev = next(a.device for a in torch.utils._pytree.tree_leaves(args) if isinstance(a, torch.Tensor))
            return torch.utils._pytree.tree_map(
                lambda o: torch.zeros(o.shape, dtype=o.dtype, device=dev) if isinstance(o, torch.Tensor) else o, out)
        return func(*args, **kwargs)


def whole_pass_flops(model, lr_side: int, scale: float) -> int:
    """One whole-image ``model.sample`` on the meta device."""
    meta = build_model_like(model).to("meta")
    out = (int(lr_side * scale),) * 2
    x = torch.zeros(1, 3, lr_side, lr_side, device="meta")
    noises = [torch.zeros(1, model.cfg.embed_dim, out[0] // 8, out[1] // 8, device="meta")
              for _ in range(model.cfg.timesteps)]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta.sample(x, Geometry.whole((lr_side, lr_side), out), noises=noises)
    return counter.get_total_flops()


def build_model_like(model):
    from e2diffsr_core.model import E2DiffSR

    with torch.device("meta"):
        return E2DiffSR(model.cfg).eval()


def engine_flops(model, lr_side: int, scale: float, tile: int, exact: bool) -> tuple[int, dict]:
    img = np.random.default_rng(0).random((3, lr_side, lr_side), dtype=np.float32)
    with FlopCounterMode(display=False) as counter:
        if exact:
            res = superresolve_array(model, img, scale, tile=tile)[2]
        else:
            with ShapesOnly():
                res = superresolve_array(model, img, scale, tile=tile)[2]
    return counter.get_total_flops(), {"tile": res.tile, "overlap": res.overlap, "tiles": res.tiles}


def load(name: str):
    if name == "bundled":
        return open_model(None, "cpu")
    return build_model(name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lr-side", type=int, default=512, help="LR side (the output is lr-side x scale)")
    ap.add_argument("--scale", type=float, default=4.0)
    ap.add_argument("--models", default="bundled,paper")
    ap.add_argument("--tiles", default="0,1024", help="engine tile sizes (0: the CPU default)")
    ap.add_argument("--exact", action="store_true", help="run every operator for real (slow; small sizes)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    out_px = int(args.lr_side * args.scale) ** 2
    report = {"lr_side": args.lr_side, "scale": args.scale, "output_px": out_px, "exact": args.exact,
              "models": {}}
    for name in args.models.split(","):
        model = load(name)
        whole = whole_pass_flops(model, args.lr_side, args.scale)
        entry = {"whole_flops_per_output_px": round(whole / out_px), "tiles": {}}
        for tile in (int(t) for t in args.tiles.split(",")):
            flops, plan = engine_flops(model, args.lr_side, args.scale, tile, args.exact)
            entry["tiles"][str(tile)] = {**plan, "engine_flops_per_output_px": round(flops / out_px),
                                         "ratio": round(flops / whole, 3)}
        report["models"][name] = entry
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
