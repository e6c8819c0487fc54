"""`python -m e2diffsr_core superresolve-batch INPUT... --out-dir DIR`: many rasters, on one or many ranks.

    python -m e2diffsr_core superresolve-batch 'tiles/*.tif' --out-dir sr --scale 4
    torchrun --nproc_per_node=4 -m e2diffsr_core superresolve-batch 'tiles/*.tif' --out-dir sr --scale 4

Every rank takes the largest raster nobody has taken yet (see distributed.Ranks); each raster goes through
the same ``superresolve_raster`` as the single-file command, with the same options and seed, so a raster
comes out the same whichever rank or however many ranks ran it.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import signal
import sys
import threading
import time

from ..api import check_scale
from ..errors import Cancelled, E2DiffSRError, Stopped, raise_stopped
from . import plan

# set per file, not taken from the command line as they are
_PER_FILE = {"input", "output", "uncertainty", "device", "overwrite", "progress", "cancel", "log"}
def raster_options(args) -> dict:
    """The keyword arguments of superresolve_raster that the command line sets, the same for every file."""
    from ..raster import superresolve_raster

    params = inspect.signature(superresolve_raster).parameters
    options = {name: getattr(args, name) for name in params if name not in _PER_FILE and hasattr(args, name)}
    options["creation_options"] = list(args.co)
    return options


def _prepare(args) -> dict:
    """Rank 0's plan: the jobs, or the one error that stops the batch before any work."""
    try:
        if getattr(args, "scale", None) is not None:  # one error now rather than the same for every raster
            check_scale(args.scale, math.inf)  # the upper limit depends on the model: checked per raster
        model = plan.model_identity(args.model)
        items = list(args.inputs) + (plan.read_list(args.inputs_from) if args.inputs_from else [])
        if args.split and args.consistency_map:
            raise E2DiffSRError("--consistency-map is not available with --split yet; leave out one of them")
        suffix = ".vrt" if args.split and not args.cog else ".tif"
        jobs = plan.plan_jobs(plan.expand_inputs(items, args.out_dir), args.out_dir, suffix)
        if args.consistency_map and len(jobs) > 1:  # one file cannot hold the maps of several rasters
            raise E2DiffSRError(f"--consistency-map names one file but the batch has {len(jobs)} rasters, whose "
                                "maps would replace each other; run superresolve with --consistency-map for the "
                                "raster whose map you need, or leave it out")
        os.makedirs(args.out_dir, exist_ok=True)
    except E2DiffSRError as exc:
        return {"error": str(exc)}
    except OSError as exc:
        return {"error": f"cannot create --out-dir {args.out_dir} ({exc.strerror}); choose another folder"}
    return {"jobs": jobs, "model": model}


def _line(text: str) -> None:
    # one write per line: the ranks share the terminal, and print() may write the newline separately
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class _Worker:
    """Runs the jobs one rank takes and prints a line for each."""

    def __init__(self, ranks, args, options: dict, model: dict, total: int):
        self.ranks, self.args, self.options, self.model, self.total = ranks, args, options, model, total
        self.first = True

    def say(self, text: str) -> None:
        if not self.args.quiet:
            prefix = f"[rank {self.ranks.rank}] " if self.ranks.world > 1 else ""
            _line(prefix + text)

    def log(self, text: str) -> None:
        if self.first:  # device, model and tile size once per rank, not once per raster
            self.say(text)

    def run(self, index: int, job: dict) -> dict:
        """Do one job (or skip it when complete); a failure is returned, not raised."""
        src, out = job["input"], job["output"]
        status, reason, seconds, text = self._attempt(src, out)
        self.say(f"{index + 1}/{self.total} {src}: {text}")
        return {"index": index, "input": src, "rank": self.ranks.rank, "status": status, "reason": reason,
                "seconds": seconds}

    def _attempt(self, src: str, out: str) -> tuple[str, str | None, float, str]:
        """(status, reason, seconds, text of the status line)."""
        try:
            fp = plan.fingerprint(src, self.options, self.model)
        except OSError as exc:
            reason = f"cannot read {src} ({exc.strerror}); check the path"
            return "failed", reason, 0.0, f"FAILED: {reason}"
        if plan.is_complete(out, fp):
            return "skipped", None, 0.0, f"skipped, {out} is complete"
        t0 = time.perf_counter()
        try:
            info = self._superresolve(src, out)
            plan.write_record(out, fp, info)
        except (Cancelled, KeyboardInterrupt):
            raise
        except E2DiffSRError as exc:
            reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - one bad raster must not stop the others
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        else:
            seconds = round(time.perf_counter() - t0, 3)
            return "done", None, seconds, f"done, {out} ({info['width']} x {info['height']} px) in {seconds:.1f} s"
        return "failed", reason, round(time.perf_counter() - t0, 3), f"FAILED: {reason}"

    def _superresolve(self, src: str, out: str) -> dict:
        from ..raster import superresolve_raster

        # what a killed rank left behind is removed by the writer (its run folder's lock is free)
        try:
            return superresolve_raster(src, out, device=self.ranks.device, overwrite=self.args.overwrite,
                                       log=self.log, **self.options)
        finally:
            self.first = False


def summarize(results: list[dict], ranks: int, seconds: float) -> int:
    counts = {s: sum(r["status"] == s for r in results) for s in ("done", "skipped", "failed")}
    what = f"{len(results)} raster{'s' if len(results) != 1 else ''}" + (f" on {ranks} ranks" if ranks > 1 else "")
    _line(f"summary: {what} in {seconds:.1f} s: {counts['done']} done, {counts['skipped']} skipped, "
          f"{counts['failed']} failed")
    for r in sorted(results, key=lambda r: r["index"]):
        if r["status"] == "failed":
            _line(f"failed: {r['input']}: {r['reason']}")
    if counts["failed"] and os.environ.get("TORCHELASTIC_RUN_ID"):
        # torchrun follows a rank's exit status 1 with a page of ChildFailedError traceback
        _line("exit status 1 for the failed rasters above: torchrun reports it below as a ChildFailedError "
              "(superresolve-batch --procs N runs the ranks of one machine without it)")
    return 1 if counts["failed"] else 0


@contextlib.contextmanager
def _signals_as_interrupt():
    """SIGTERM (torchrun stops the other ranks with it when one fails) and SIGHUP (the terminal closed, which
    under torchrun reaches every rank) unwind as Ctrl-C does, so that the raster being written leaves no
    temporary file or run folder behind."""
    if threading.current_thread() is not threading.main_thread():  # only it may set a handler
        yield
        return
    names = [n for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    previous = {n: signal.signal(getattr(signal, n), raise_stopped) for n in names}
    try:
        yield
    finally:
        for n, handler in previous.items():
            signal.signal(getattr(signal, n), handler)


def run(args) -> int:
    with _signals_as_interrupt():
        return _run_ranks(args)


def _run_ranks(args) -> int:
    from .distributed import Ranks

    t0 = time.perf_counter()
    if args.threads < 0:
        raise E2DiffSRError(f"--threads must be 0 (automatic) or more, got {args.threads}")
    ranks = Ranks(args.device, args.threads)
    interrupted = False
    try:
        options = raster_options(args)
        work = ranks.share("plan", _prepare(args) if ranks.is_main else None)
        # rank 0 alone carries the batch's exit status: it leaves last (see Ranks.close), and torchrun
        # stops every rank still running as soon as one exits with an error
        if "error" in work:
            if ranks.is_main:
                raise E2DiffSRError(work["error"])
            return 0
        jobs = work["jobs"]
        worker = _Worker(ranks, args, options, work["model"], len(jobs))
        if args.split:
            from .split import run_split

            results = run_split(ranks, jobs, options, work["model"], worker)
            return summarize(results, ranks.world, time.perf_counter() - t0) if ranks.is_main else 0
        mine = []
        while (index := ranks.claim()) < len(jobs):
            mine.append(worker.run(index, jobs[index]))
        gathered = ranks.gather("results", mine)
        if not ranks.is_main:
            return 0
        return summarize(sum(gathered, []), ranks.world, time.perf_counter() - t0)
    except KeyboardInterrupt as exc:
        interrupted = True
        what = f"stopped by {exc.name}" if isinstance(exc, Stopped) else "interrupted"
        print(f"{what}{f' (rank {ranks.rank})' if ranks.world > 1 else ''}: complete outputs are kept; "
              "run the same command again to finish the rest", file=sys.stderr, flush=True)
        return 128 + exc.signum if isinstance(exc, Stopped) else 130
    finally:
        ranks.close(wait=not interrupted)  # an interrupted run may have lost a rank: nobody to wait for
