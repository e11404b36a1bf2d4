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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from components.bundle import Storage

KEY_FILE = "key.json"
T = TypeVar("T")


def key(*parts: Any) -> str:
    """sha256 over canonical JSON of ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def stored(folder: str) -> dict[str, Any] | None:
    """The key document of a completed step folder (written last), or None."""
    store = Storage(folder)
    try:
        doc: dict[str, Any] = json.loads(store.read_text(KEY_FILE))
    except (FileNotFoundError, ValueError):
        return None
    return doc


def matches(folder: str, expected: str) -> dict[str, Any] | None:
    """The stored document when its key equals ``expected``; None when absent or stale."""
    doc = stored(folder)
    return doc if doc is not None and doc.get("key") == expected else None


def mark_done(folder: str, k: str, **info: Any) -> None:
    """Record that ``folder`` holds a complete step output for key ``k`` (atomically, last)."""
    Storage(folder).write_text(KEY_FILE, json.dumps({"key": k, **info}, indent=1, default=str))


def invalidate(folder: str) -> None:
    """Forget a step folder's key before its output is written again, so a half-rewritten
    folder is never taken for the complete output of its old key."""
    Storage(folder).delete_file(KEY_FILE)


def unfinished_run(runs_dir: str) -> str | None:
    """The newest run directory whose report does not say it succeeded (None if there is none)."""
    runs = Storage(runs_dir)
    names = sorted((n for n, is_dir in runs.list_dir().items() if is_dir), reverse=True)
    for name in names:
        try:
            status = json.loads(runs.read_text(f"{name}/report.json")).get("status")
        except FileNotFoundError:
            return runs.where(name)  # the driver died before any report
        except ValueError:
            return runs.where(name)
        if status != "succeeded":
            return runs.where(name)
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
        invalidate(r.folder)
        result = compute()
        mark_done(r.folder, r.key, **r.save(result))
        return result
