"""The run folder checked before any work, and stop signals turned into a saved, resumable checkpoint."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from ..errors import E2DiffSRError


class RunStopped(Exception):
    """SIGTERM or SIGINT stopped the run after its state was saved; ``code`` is the exit status (128 + signal)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def prepare_out(out: Path, resume: bool) -> bool:
    """Check (and create) the run folder before any work; returns True when this call created it."""
    if out.exists() and not out.is_dir():
        raise E2DiffSRError(f"--out {out} is a file, not a folder; give a folder for the run")
    state = out / "state.pt"
    if resume and not state.is_file():
        raise E2DiffSRError(f"nothing to resume: {state} not found")
    if not resume and state.exists():
        raise E2DiffSRError(f"{out} already holds a run (state.pt); pass --resume to continue it "
                            "or choose another --out")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise E2DiffSRError(f"cannot create the run folder {out} ({e.strerror or e}); choose a folder you can "
                            "write to with --out") from None
    probe = out / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        drop_if_created(out, created)
        what = "continue the run in" if resume else "write the run to"
        raise E2DiffSRError(f"cannot {what} {out}: the folder is not writable ({e.strerror or e}); make it writable "
                            "or choose another --out") from None
    return created


def drop_if_created(out: Path, created: bool) -> None:
    """Remove a run folder this run created when it holds nothing (a refused run leaves nothing behind)."""
    if created:
        try:
            out.rmdir()
        except OSError:
            pass


class StopSignals:
    """While active, SIGTERM and SIGINT only set ``name``: the loop finishes its step, saves and stops. A second
    SIGINT interrupts at once (the last checkpoint stays intact)."""

    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(self):
        self.name: str | None = None
        self.signum = 0
        self._old: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.name, self.signum = signal.Signals(signum).name, signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name)
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}
