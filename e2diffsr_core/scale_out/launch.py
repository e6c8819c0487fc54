"""`superresolve-batch --procs N`: the ranks of one machine started by the command itself, without torchrun.

Each rank is the same command (without ``--procs``) in a child process with the ``env://`` variables torchrun
would set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` on this machine and
a free ``MASTER_PORT``), so the ranks share the rasters exactly as under torchrun (distributed.Ranks). What
the launcher adds: the batch's own exit status and summary with nothing after it (torchrun ends a batch with
failed rasters with a page of ChildFailedError traceback), and signals handled as one command: SIGTERM or
SIGHUP to the launcher reaches every rank, Ctrl-C reaches them from the terminal, and a rank that dies stops
the others (they remove their temporary files), as torchrun does.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

_POLL_S = 0.2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rank_env(rank: int, procs: int, port: int) -> dict:
    """The environment of rank ``rank`` of ``procs`` on this machine."""
    return dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(procs),
                LOCAL_WORLD_SIZE=str(procs), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                GROUP_RANK="0", ROLE_RANK=str(rank), ROLE_WORLD_SIZE=str(procs))


def without_procs(argv: list[str]) -> list[str]:
    """``argv`` without ``--procs N`` / ``--procs=N``."""
    out, skip = [], False
    for a in map(str, argv):
        if skip:
            skip = False
        elif a == "--procs":
            skip = True
        elif not a.startswith("--procs="):
            out.append(a)
    return out


def launch(argv: list[str], procs: int) -> int:
    """Run ``python -m e2diffsr_core ARGV`` as ``procs`` ranks; the batch's exit status (rank 0's, or that of
    a rank that failed first)."""
    port = _free_port()
    children = [subprocess.Popen([sys.executable, "-m", "e2diffsr_core", *argv], env=rank_env(r, procs, port))
                for r in range(procs)]
    stopping: list[int] = []

    def forward(signum, _frame):
        stopping.append(signum)
        for c in children:
            if c.poll() is None:
                c.send_signal(signum)

    names = [n for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    previous = {n: signal.signal(getattr(signal, n), forward) for n in names}
    previous_int = signal.signal(signal.SIGINT, lambda *_: stopping.append(signal.SIGINT))  # ranks get it too
    try:
        status = _wait(children)
    finally:
        for n, handler in previous.items():
            signal.signal(getattr(signal, n), handler)
        signal.signal(signal.SIGINT, previous_int)
    return status


def _wait(children: list[subprocess.Popen]) -> int:
    failed = None
    while any(c.poll() is None for c in children):
        for r, c in enumerate(children):
            code = c.poll()
            # rank 0 reports and leaves last (distributed.Ranks.close); another rank leaving with an error
            # means it died: stop the rest, as torchrun does
            if failed is None and code not in (None, 0) and r != 0:
                failed = code
                for other in children:
                    if other.poll() is None:
                        other.send_signal(signal.SIGTERM)
        time.sleep(_POLL_S)
    first = children[0].returncode
    if failed is not None:
        return failed if failed > 0 else 128 - failed
    return first if first >= 0 else 128 - first


__all__ = ["launch", "rank_env", "without_procs"]
