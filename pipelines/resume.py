"""What a resumed run may reuse, decided by keys over its inputs (no Ray here).

A run writes its prepared splits and fitted features under ``<run dir>/prepared/`` and each
trained candidate under ``<run dir>/candidates/``, each with a key: a hash of everything that
produced it (the data fingerprint and the spec sections it depends on, chained through the
earlier steps' keys). ``rayline run SPEC --resume`` reopens the newest unfinished run of the
pipeline; a step is reused only when its stored key equals the key recomputed now, otherwise it
and every later step run again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

KEY_FILE = "key.json"
T = TypeVar("T")


def key(*parts: Any) -> str:
    """sha256 over canonical JSON of ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def stored(folder: str | Path) -> dict[str, Any] | None:
    """The key document of a completed step folder (written last), or None."""
    path = Path(folder, KEY_FILE)
    if not path.exists():
        return None
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except ValueError:
        return None
    return doc


def matches(folder: str | Path, expected: str) -> dict[str, Any] | None:
    """The stored document when its key equals ``expected``; None when absent or stale."""
    doc = stored(folder)
    return doc if doc is not None and doc.get("key") == expected else None


def mark_done(folder: str | Path, k: str, **info: Any) -> None:
    """Record that ``folder`` holds a complete step output for key ``k`` (atomically, last)."""
    os.makedirs(folder, exist_ok=True)
    path = Path(folder, KEY_FILE)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": k, **info}, indent=1, default=str))
    os.replace(tmp, path)


def unfinished_run(runs_dir: str | Path) -> Path | None:
    """The newest run directory whose report does not say it succeeded (None if there is none)."""
    root = Path(runs_dir)
    if not root.is_dir():
        return None
    for run in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True):
        report = run / "report.json"
        if not report.exists():
            return run  # the driver died before any report
        try:
            status = json.loads(report.read_text()).get("status")
        except ValueError:
            return run
        if status != "succeeded":
            return run
        return None  # the newest run finished: nothing to resume
    return None


@dataclass(frozen=True)
class Reusable(Generic[T]):
    """How one stage's result is kept for a resumed run: where, under which key, and how to
    write it (``save`` writes the files, returns what the key document keeps) and read it back
    (``load`` gets that document)."""

    names: tuple[str, ...]  # what the report's "reused" lists
    folder: str
    key: str
    save: Callable[[T], dict[str, Any]]
    load: Callable[[dict[str, Any]], T]


@dataclass
class Resume:
    """The one wrapper around stage calls: with ``enabled`` (``--resume``), a stage whose stored
    key equals its key now is loaded instead of run; every finished stage is stored."""

    enabled: bool
    reused: list[str] = field(default_factory=list)

    def stored(self, r: Reusable[Any]) -> dict[str, Any] | None:
        """The stored document ``r`` would be loaded from, or None (not resuming, or stale)."""
        return matches(r.folder, r.key) if self.enabled else None

    def reuse(self, r: Reusable[T], doc: dict[str, Any]) -> T:
        """``r``'s result loaded from its stored document (from ``stored``)."""
        result = r.load(doc)
        self.reused.extend(r.names)
        return result

    def run(self, r: Reusable[T], compute: Callable[[], T]) -> T:
        """``r``'s stored result when it can be reused, else ``compute()`` (then stored)."""
        doc = self.stored(r)
        if doc is not None:
            return self.reuse(r, doc)
        result = compute()
        mark_done(r.folder, r.key, **r.save(result))
        return result
