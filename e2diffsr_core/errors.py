"""The one exception type front ends turn into a one-line message and a non-zero exit."""


class E2DiffSRError(Exception):
    """A problem the user can fix: the message says what was wrong and what to do."""


class Cancelled(E2DiffSRError):
    """The run was cancelled by the user; no output is left behind."""

    def __init__(self, message: str = "cancelled by the user; no output was written"):
        super().__init__(message)


class Stopped(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM, SIGHUP); raised in the main thread so that clean-up runs."""

    def __init__(self, signum: int, name: str):
        super().__init__(name)
        self.signum, self.name = signum, name


def raise_stopped(signum, _frame) -> None:
    """A signal handler: SIGTERM or SIGHUP unwind the main thread as Ctrl-C does (:class:`Stopped`)."""
    import signal

    raise Stopped(signum, signal.Signals(signum).name)


def check_cancel(cancel) -> None:
    """Raise :class:`Cancelled` when the caller's ``cancel()`` says so (``None``: never)."""
    if cancel is not None and cancel():
        raise Cancelled()
