"""Ctrl-C stops ``transfer``: the stage in progress is not recorded, and the command exits with 130.

Lightning catches ``KeyboardInterrupt`` inside ``Trainer.fit``/``validate``/``test`` and calls the
callbacks' ``on_exception``. Lightning 2.3 then returns normally with ``trainer.interrupted`` set;
from 2.4 it ignores further SIGINTs and calls ``sys.exit(1)``. So the code after ``trainer.fit``
either went on, validated, tested and recorded the interrupted stage as finished (the next run
skipped it with a half-trained result, and the command exited 0), or exited 1 without saying what
was kept. A ``KeyboardInterrupt`` raised inside a ``__del__`` or a callback that swallows exceptions
is lost the same way. :class:`CtrlC` sees the keypress itself: its handler notes it before raising
``KeyboardInterrupt``, and :meth:`CtrlC.call` (around every Trainer entry point) and
:meth:`CtrlC.check` (before a stage is recorded) raise ``KeyboardInterrupt`` again whenever one was
noted or Lightning reports one. The command turns it into :class:`Interrupted`: one line saying what
was kept, and exit code :data:`EXIT_CODE`.

A process started with SIGINT ignored never sees Ctrl-C: a script's background job (``cmd &`` in a
non-interactive shell) starts so, its children inherit it, and Python keeps an inherited ``SIG_IGN``.
That is the shell's way to keep Ctrl-C from background jobs, so it stays as it is; a harness that
sends SIGINT to stand for Ctrl-C must start the command with SIGINT at its default.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, TypeVar

T = TypeVar("T")
EXIT_CODE = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped the command; ``str()`` is the line that says what was kept and how to resume."""


class CtrlC:
    """Notes Ctrl-C (SIGINT) while the ``with`` block runs, so that a lost ``KeyboardInterrupt`` still stops.

    On entry, in the main thread, it wraps the current Python-level SIGINT handler (normally
    ``signal.default_int_handler``, which raises ``KeyboardInterrupt``): the wrapper sets
    :attr:`pressed`, then calls it. An ignored SIGINT (``SIG_IGN``: a background job) or the
    default action stays as it is; outside the main thread, where Python cannot set handlers, it does
    nothing. On exit the previous handler is back, also after Lightning set ``SIG_IGN`` while it shut
    a Trainer down."""

    def __init__(self) -> None:
        self.pressed = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if callable(previous):
                self._previous, self._installed = previous, True
                signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.pressed = True
        self._previous(signum, frame)

    def check(self) -> None:
        """Raise ``KeyboardInterrupt`` when Ctrl-C was pressed (call it before recording a stage)."""
        if self.pressed:
            raise KeyboardInterrupt

    def call(self, entry: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``entry(*args, **kwargs)``, where ``entry`` is a Trainer's bound ``fit``, ``validate`` or
        ``test``, raising ``KeyboardInterrupt`` when Ctrl-C stopped it: Lightning's ``sys.exit(1)``
        after a ``KeyboardInterrupt`` (2.4 on), its normal return with ``trainer.interrupted`` (2.3),
        or a keypress noted by this object. Other exceptions, and other ``SystemExit``\\ s, pass unchanged."""
        try:
            result = entry(*args, **kwargs)
        except SystemExit as exit_:
            if self.pressed or isinstance(exit_.__context__, KeyboardInterrupt):
                raise KeyboardInterrupt from None
            raise
        if entry.__self__.interrupted:  # type: ignore[attr-defined]
            self.pressed = True
        self.check()
        return result
