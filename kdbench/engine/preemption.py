"""Pre-emption: SIGTERM, SIGUSR1 and SIGUSR2 (what SLURM sends at pre-emption and, with ``--signal``, before a
time limit; submitit asks for SIGUSR2 by default) ask the run to stop at the next step boundary; the trainer then
writes a mid-epoch checkpoint and raises ``Preempted``.

Handlers installed before ours (submitit's, which requeues the job on its signal) are kept: ``hand_over`` calls
the one for the received signal once the checkpoint is safely on disk, so submitit requeues a job whose state
is saved, and the requeued job resumes from it.
"""

from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGUSR2") if hasattr(signal, name))

_requested: signal.Signals | None = None
_previous: dict[int, object] = {}


class Preempted(Exception):
    """The run stopped on a signal after checkpointing; resume continues exactly where it stopped."""


def requested() -> signal.Signals | None:
    """The stop signal received, if any (cheap: read at every step)."""
    return _requested


def _handler(signum, frame) -> None:
    global _requested
    _requested = signal.Signals(signum)


@contextlib.contextmanager
def stop_on_signals():
    """Within the block, SIGTERM / SIGUSR1 request a stop instead of killing the process (main thread only)."""
    global _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested = None
    for sig in SIGNALS:
        _previous[sig] = signal.signal(sig, _handler)
    try:
        yield
    finally:
        for sig in SIGNALS:
            signal.signal(sig, _previous.pop(sig))


def hand_over() -> None:
    """Give the received signal to the handler that was installed before ours (submitit: requeue and exit)."""
    sig = _requested
    previous = _previous.get(sig) if sig is not None else None
    if callable(previous):
        previous(int(sig), None)
