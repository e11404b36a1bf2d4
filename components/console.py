"""Where rayline's progress lines go: stdout, unless a command has pointed them elsewhere.

While ``rayline run`` sends Ray's own output to a log file (pipelines.ray_logs), stdout *is* that
file, and the command points progress lines at the terminal with ``directed_to``. Code that runs
in the driver but is handed over to Ray cannot take a printer argument (a Tune callback is
pickled with the search's state), so it prints through ``say``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Sink = Callable[[str], None]

_sink: Sink | None = None


def say(line: str) -> None:
    """Print one progress line where the user reads rayline's output."""
    if _sink is None:
        print(line, flush=True)
    else:
        _sink(line)


@contextmanager
def directed_to(sink: Sink) -> Iterator[None]:
    """Within the block, ``say`` calls ``sink`` (the previous sink is restored afterwards)."""
    global _sink
    previous, _sink = _sink, sink
    try:
        yield
    finally:
        _sink = previous
