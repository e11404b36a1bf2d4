"""Progress lines of a run: ``[i/n] step: what`` when a step starts, ``done in Xs`` when it ends."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

Printer = Callable[[str], None]


@dataclass
class StepTimer:
    out: Printer
    total: int
    index: int = 0
    times: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str, what: str) -> Iterator[None]:
        self.index += 1
        self.out(f"[{self.index}/{self.total}] {name}: {what}")
        start = time.time()
        yield
        self.times[name] = round(time.time() - start, 2)
        self.out(f"[{self.index}/{self.total}] {name}: done in {self.times[name]:.1f}s")

    def skip(self, name: str, why: str) -> None:
        self.index += 1
        self.times[name] = 0.0
        self.out(f"[{self.index}/{self.total}] {name}: {why}")
