"""The `docvec` script's entry point: stop signals are docvec's from the first instant.

Importing the CLI (click, the configuration, then Chroma when a command needs it) takes up to ~1.5 s; a signal in
that time used to end in click's "Aborted!" and exit 1, or a traceback. Here the handlers are installed before
anything else is imported, and every interrupt ends the same way: one line, exit 128 + the signal.
"""

from __future__ import annotations

import signal
import sys
TYPE_CHECKING = False  # typing costs ~7 ms to import: this module is on the warm client's path (query/client.py)
if TYPE_CHECKING:
    from typing import Any, NoReturn

STOPPED: list[int] = []  # the signals received, last one last
# Signals that end a run from outside: docker stop, systemd and CI cancel send SIGTERM; a closed terminal or a
# dropped ssh session sends SIGHUP. Each stops a run like Ctrl-C instead of killing it mid-write.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def stop_signal(signum: int, frame: Any) -> None:
    """SIGTERM and SIGHUP stop a run like Ctrl-C: between two atomic writes."""
    STOPPED.append(signum)
    raise KeyboardInterrupt


def _ignore_signals() -> None:
    for signum in (signal.SIGINT, *STOP_SIGNALS):
        signal.signal(signum, signal.SIG_IGN)


def main() -> NoReturn:
    """Run the CLI; an interrupt at any moment is one line and exit 130 (SIGINT), 143 (SIGTERM) or 129 (SIGHUP)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop_signal)
    try:
        from docvec.query.client import main as answer_through_server

        answer_through_server()  # `docvec query` a running server answers: standard library only, no click
        from docvec.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        pass
    except SystemExit:
        _ignore_signals()  # the command has finished: a late signal does not change what it did, or its exit
        raise
    _ignore_signals()
    signum = STOPPED[-1] if STOPPED else int(signal.SIGINT)
    try:
        sys.stderr.write(f"docvec: stopped by {signal.Signals(signum).name}: nothing is left half-written; run "
                         f"the command again to finish\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    raise SystemExit(128 + signum)
