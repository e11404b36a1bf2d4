"""Ray's own output to a log file; rayline's lines to the terminal.

A Ray driver prints from several places: Python loggers (``INFO worker.py:... Started a local Ray
instance``), the thread that forwards every worker's and actor's stdout and stderr
(``(RayTrainWorker pid=...) ...``, Tune's and Serve's actors alike), Ray Data's progress, and the
C++ core worker, which writes to file descriptor 2 itself (``[... E ...] core_worker.cc:...``).
Only redirecting the descriptors catches all of them. So while ``capture`` is active,
descriptors 1 and 2 (and with them sys.stdout and sys.stderr, which write to them) go to the
log file, and rayline's own lines go to duplicates of the original descriptors: the
``Console``. Warnings raised by rayline's own code are shown on the terminal too.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from components import console as progress

LOG_NAME = "ray.log"  # in the run directory

# Read by the driver each time it prints a worker's line: "0" leaves out the colour codes
# around the "(RayTrainWorker pid=...)" prefixes.
NO_COLOR_ENV = "RAY_COLOR_PREFIX"

_PACKAGES = ("components", "pipelines", "serve")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PACKAGE_DIRS = tuple(os.path.join(_ROOT, p) + os.sep for p in _PACKAGES)


class Console:
    """Where rayline's own lines go: the terminal, whatever Ray's output does.

    Without streams of its own (nothing captured) it writes to sys.stdout/sys.stderr as they
    are at each call: a notebook or a test may replace them.
    """

    def __init__(
        self, out: TextIO | None = None, err: TextIO | None = None, log_path: str | None = None
    ) -> None:
        self._out, self._err = out, err
        self.log_path = log_path  # where Ray's output goes; None: to the terminal as usual
        self._lock = threading.Lock()  # Tune's loop prints from its own thread

    def attach(self, out: TextIO | None, err: TextIO | None, log_path: str | None) -> None:
        """Write to ``out``/``err`` from now on (None: sys.stdout/sys.stderr)."""
        with self._lock:
            self._out, self._err, self.log_path = out, err, log_path

    def say(self, line: str = "") -> None:
        """One progress line, on stdout."""
        self._write(self._out or sys.stdout, line)

    def error(self, line: str) -> None:
        """One error or warning line, on stderr."""
        self._write(self._err or sys.stderr, line)

    def _write(self, stream: TextIO, line: str) -> None:
        with self._lock:
            stream.write(line + "\n")
            stream.flush()


@contextmanager
def capture(
    log_path: str | None, title: str = "rayline", console: Console | None = None
) -> Iterator[Console]:
    """Within the block, descriptors 1 and 2 write to ``log_path`` (appended to, with a header
    line naming ``title``); ``console`` (a new one if not given) writes to what they were.

    ``log_path=None`` redirects nothing (``--verbose``, or Ray already connected in this
    process). The descriptors are restored on the way out, before an exception leaves the
    block, so its traceback reaches the terminal.
    """
    con = console or Console()
    if log_path is None:
        yield con
        return
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _flush(sys.stdout, sys.stderr)  # what was printed before goes where it was meant to
    saved = (os.dup(1), os.dup(2))  # not inheritable: Ray's processes never get the terminal
    out = _text(saved[0], sys.stdout)
    err = _text(saved[1], sys.stderr)
    con.attach(out, err, os.path.abspath(log_path))
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    os.write(log_fd, f"==== {title}: {now}, pid {os.getpid()} ====\n".encode())
    shown = warnings.showwarning
    color = os.environ.get(NO_COLOR_ENV)
    lines = _line_buffering(sys.stdout)
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        # Each line in the log as it is printed (nothing lost if the driver is killed, and in
        # order with what writes to the descriptors directly), without terminal colour codes.
        _set_line_buffering(sys.stdout, True)
        os.environ[NO_COLOR_ENV] = "0"
        warnings.showwarning = _warnings_to(con, shown)
        with progress.directed_to(con.say):
            yield con
    finally:
        warnings.showwarning = shown
        if color is None:
            os.environ.pop(NO_COLOR_ENV, None)
        else:
            os.environ[NO_COLOR_ENV] = color
        _flush(sys.stdout, sys.stderr)
        _set_line_buffering(sys.stdout, lines)
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        con.attach(None, None, con.log_path)  # stdout and stderr are the terminal again
        out.close()  # closes saved[0]
        err.close()
        os.close(log_fd)


def _line_buffering(stream: TextIO | None) -> bool:
    return bool(getattr(stream, "line_buffering", False))


def _set_line_buffering(stream: TextIO | None, on: bool) -> None:
    reconfigure = getattr(stream, "reconfigure", None)  # a replaced stream may not have it
    if reconfigure is not None:
        reconfigure(line_buffering=on)


def _text(fd: int, like: TextIO | None) -> TextIO:
    """A line-buffered text stream on ``fd``, with the encoding of the stream it stands for."""
    encoding = getattr(like, "encoding", None) or "utf-8"
    return open(fd, "w", buffering=1, encoding=encoding, errors="backslashreplace")


def _flush(*streams: TextIO | None) -> None:
    for s in streams:
        try:
            if s is not None:
                s.flush()
        except (OSError, ValueError):  # a closed or broken stream has nothing to keep
            pass


def is_own_warning(category: type[Warning], filename: str) -> bool:
    """A warning rayline raised for the user: a rayline warning class, or a plain UserWarning
    from rayline's code (other libraries' warnings stay in the log, also when their stack
    level points into rayline)."""
    if category.__module__.split(".")[0] in _PACKAGES:
        return True
    return category is UserWarning and os.path.abspath(filename).startswith(_PACKAGE_DIRS)


def _warnings_to(con: Console, fallback: Callable[..., Any]) -> Callable[..., None]:
    """warnings.showwarning that also shows rayline's own warnings on the console."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if file is None and is_own_warning(category, filename):
            con.error(f"rayline: warning: {message}")
        fallback(message, category, filename, lineno, file, line)  # the full form, in the log

    return show
