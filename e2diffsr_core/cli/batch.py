"""Options of `python -m e2diffsr_core superresolve-batch`: those of `superresolve` plus the batch's own
(inputs, --out-dir, --split, --threads); the run itself is scale_out.batch.run."""

from __future__ import annotations

import argparse
import copy

_HELP = {
    "overwrite": "replace outputs that exist but are not complete results of these inputs and options "
                 "(complete ones are always skipped)",
    "quiet": "print only the summary, no line per raster",
}



def _superresolve_options() -> list[argparse.Action]:
    """The options of `superresolve` itself, so that both commands always accept the same ones."""
    from .superresolve import add_parser as add_single

    sub = argparse.ArgumentParser(add_help=False).add_subparsers()
    add_single(sub)
    actions = []
    for action in sub.choices["superresolve"]._actions:
        if not action.option_strings or action.dest in ("help", "uncertainty"):
            continue
        action = copy.copy(action)
        action.help = _HELP.get(action.dest, action.help)
        actions.append(action)
    return actions


def add_parser(sub) -> None:
    p = sub.add_parser(
        "superresolve-batch", help="super-resolve many rasters into a folder (resumable; torchrun for many GPUs)",
        description="Super-resolve every input into OUT_DIR/<input name>.tif with the options of "
                    "`superresolve`. Run the same command again to finish an interrupted batch: complete "
                    "outputs are skipped. Under torchrun the ranks share the rasters, largest first.")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="input rasters or quoted patterns such as 'tiles/*.tif' or 'survey/**/*.tif'")
    p.add_argument("--inputs-from", metavar="FILE", help="text file with one input path a line")
    p.add_argument("--out-dir", required=True, help="folder for the outputs (created when missing)")
    for action in _superresolve_options():
        p._add_action(action)
    p.add_argument("--split", action="store_true",
                   help="for very large rasters: split each raster across all the ranks in bands of tile rows; "
                        "writes OUT_DIR/<name>.vrt over the parts in OUT_DIR/<name>_parts/, or with --cog one "
                        "OUT_DIR/<name>.tif (needs a north-up geotransform)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads per process (default: all cores, split between the ranks of a machine); "
                        "results are identical for the same seed and the same number of threads")
    p.add_argument("--procs", type=int, default=1, metavar="N",
                   help="run N ranks on this machine without torchrun (each with its share of the cores or "
                        "its own GPU), as torchrun --nproc_per_node=N would")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import os

    from ..errors import E2DiffSRError
    from ..scale_out.batch import run

    if args.procs < 1:
        raise E2DiffSRError(f"--procs must be 1 or more, got {args.procs}")
    if args.procs > 1:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise E2DiffSRError("--procs starts the ranks itself; under torchrun leave it out (torchrun's "
                                "--nproc_per_node sets the number of ranks)")
        from ..scale_out.launch import launch, without_procs

        return launch(without_procs(args.argv), args.procs)
    return run(args)


