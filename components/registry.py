"""The model registry: numbered, immutable, verified bundles per model, plus movable aliases.

Layout under the storage root::

    registry/<model>/<version>/      a bundle (any files + MANIFEST.json), versions 1, 2, 3, ...
    registry/<model>/aliases.json    {"format": 1, "revision": n,
                                      "aliases": {"production": 3, "candidate": 4},
                                      "history": [{"alias": "production", "version": 3, "at": "<utc>"}, ...]}
    registry/<model>/.aliases/       the alias revision log (see below)
    registry/<model>/.tmp-<uuid>/    a publish in progress (invisible; removed on success or error,
                                     and swept by a later publish if a crash left it behind)

Nothing half-written is ever visible, and concurrent writers need no lock server:

* **Publishing** (local or shared POSIX filesystem) copies the bundle (its SIGNATURE too, if it
  is signed; see components.bundle) into ``<model>/.tmp-<uuid>``,
  fsyncs and verifies it, then renames it to ``<model>/<v>`` where ``v`` is one more than the
  highest version directory. ``rename(2)`` refuses to replace a non-empty directory, so if another
  writer took ``v`` meanwhile the rename fails and the publish retries with ``v + 1``: every
  publisher gets a distinct version and every version appears complete.
  On a non-local filesystem (object store) the version number is claimed with an exclusive create
  of ``<model>/.claims/<v>`` (:meth:`Storage.create_exclusive`), then the files are written in
  place with MANIFEST.json last.
* **Commit-marker rule**: a version directory without MANIFEST.json does not exist for readers
  (``versions``, ``resolve``, ``models``), whatever the backend.
* **Aliases** change by compare-and-swap on a revision number: a writer reads the current state
  (revision ``r``), builds revision ``r + 1`` (aliases + appended history) and creates
  ``.aliases/<r+1>.json`` exclusively (a hard link of a fully written temporary file, so it appears
  complete). If another writer created it first, the writer re-reads and retries, so no update or
  history entry is lost. The newest revision file is the state; ``aliases.json`` is then
  rewritten from it atomically (``aliases.json.tmp-<uuid>`` + ``os.replace``) for people and tools
  that read it directly. Old revision files are pruned (the newest 32, and any from the last ten
  minutes, are kept).
* On a non-local filesystem the exclusive creates use the claim protocol of
  :meth:`Storage.create_exclusive` (it needs read-after-write consistent listings, as S3 and GCS
  give), ``aliases.json`` is rewritten in place (an object PUT is all-or-nothing), and winning
  ``*.claim-*`` markers stay in ``.claims/`` and ``.aliases/`` for ten minutes before they are
  swept. Readers never depend on ``aliases.json`` while the revision log exists.

Faults it recovers from (each has a test in tests/unit/test_registry_faults.py):

* A damaged (truncated, unparsable) newest revision file: readers and writers use the newest
  readable revision instead (or ``aliases.json`` if that is newer) and say so in a
  :class:`RegistryWarning` naming the skipped file; the next update is written above the damaged
  one, so it stops being the newest. An unreadable file counts as damaged, not as still being
  written, once it is a second old (readers: by its mtime or by waiting; writers always wait that
  second, so a clock difference on a shared filesystem cannot make them skip a write in
  progress). With nothing readable left, the call fails with a RegistryError naming the files.
* A revision number that is not a whole number from 0 to 999,999,999,999 (revision files have
  12 digits), or a revision file whose content does not match its name: a RegistryError naming
  the file (an update is never reported as done and then lost).
* History entries without a valid ``version`` (edited by hand): skipped by ``rollback`` and
  ``previous``.
* ``.tmp-*`` folders and files that a crashed writer left in ``<model>/`` or ``.aliases/``: a
  publish removes those in which nothing changed for ten minutes (a live publisher writes its
  files continuously and touches its folder before verifying it, so its folder is never that
  old unless verifying the copy alone takes ten minutes).

Readers need no coordination: a listing may miss an entry created while it runs (it will be seen
by the next call) but never shows a half-written version or alias state.
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.bundle import (
    MANIFEST,
    SIGNATURE,
    TMP_MARK,
    BundleError,
    Storage,
    utc_now,
    verify_bundle,
)

REGISTRY_DIR = "registry"
ALIASES_FILE = "aliases.json"
DEFAULT_ALIAS = "production"
ROLLBACK_NOTE = "rollback"
_ALIAS_LOG = ".aliases"
_CLAIMS = ".claims"
_MODEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_ALIAS_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_VERSION_RE = re.compile(r"[1-9][0-9]{0,17}")
_REV_RE = re.compile(r"([0-9]{12})\.json")
_MAX_ATTEMPTS = 1000
_KEEP_REVISIONS = 32
_KEEP_REVISION_NS = 600 * 1_000_000_000
_MAX_REVISION = 10**12 - 1  # revision files are named with 12 digits
# An unreadable revision file this old (mtime, or seen unreadable this long) is damaged, not being
# written (only non-atomic writes, i.e. no hard links or an object store, show a partial file).
_DAMAGED_S = 1.0
# A .tmp-* folder or file in which nothing changed for this long was left by a crashed writer.
_STALE_TMP_NS = _KEEP_REVISION_NS


class RegistryError(Exception):
    """Unknown model/version/alias, a bad name, or a registry operation that could not complete."""


class RegistryWarning(UserWarning):
    """A damaged registry file was skipped; the message names it and what was used instead."""


class _Unreadable(ValueError):
    """An alias state file that does not parse: damaged, or still being written non-atomically."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    path: str
    created_at: str
    aliases: tuple[str, ...]


def _check_model(model: str) -> str:
    if not isinstance(model, str) or not _MODEL_RE.fullmatch(model):
        raise RegistryError(
            f"invalid model name {model!r}: use 1-128 characters from A-Z a-z 0-9 _ . -, "
            "starting with a letter or digit"
        )
    return model


def _check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS_RE.fullmatch(alias):
        raise RegistryError(
            f"invalid alias {alias!r}: use 1-64 characters from A-Z a-z 0-9 _ . -, starting with a letter"
        )
    return alias


def _check_version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RegistryError(f"invalid version {version!r}: versions are integers 1, 2, 3, ...")
    return version


def _empty_state() -> dict[str, Any]:
    return {"format": 1, "revision": 0, "aliases": {}, "history": []}


def _dumps(doc: Any) -> bytes:
    return (json.dumps(doc, indent=1) + "\n").encode()


def _parse_state(raw: bytes, where: str, expect: int | None = None) -> dict[str, Any]:
    """An alias state document; a legacy flat {"alias": version} mapping is accepted too.

    _Unreadable if it does not parse or has the wrong shape; RegistryError if its revision is
    not a whole number from 0 to ``_MAX_REVISION`` or (a revision file) differs from ``expect``,
    the number in its name."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _Unreadable(where, f"not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise _Unreadable(where, "expected a JSON object")
    if "aliases" not in doc:
        doc = {"aliases": doc}
    aliases, history = doc.get("aliases"), doc.get("history", [])
    if not isinstance(aliases, dict) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in aliases.items()
    ):
        raise _Unreadable(where, "'aliases' must map alias names to version numbers")
    if not isinstance(history, list):
        raise _Unreadable(where, "'history' must be a list")
    revision = doc.get("revision", 0)
    if (
        isinstance(revision, bool)
        or not isinstance(revision, int)
        or not 0 <= revision <= _MAX_REVISION
    ):
        raise RegistryError(
            f"{where}: 'revision' is {revision!r}, not a whole number from 0 to {_MAX_REVISION} "
            "(edited by hand?): correct it to the revision it held, or remove the 'revision' field"
        )
    if expect is not None and revision != expect:
        raise RegistryError(
            f"{where}: holds revision {revision} but its name says {expect} (edited by hand?): "
            f"set 'revision' back to {expect}"
        )
    return {"format": 1, "revision": revision, "aliases": dict(aliases), "history": list(history)}


def _valid_version(entry: Any) -> int | None:
    """The version of a history entry, or None for a malformed one (no int ``version`` >= 1)."""
    v = entry.get("version") if isinstance(entry, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 1 else None


def _damaged(mtime_ns: int | None, first_seen: float, trust_mtime: bool) -> bool:
    """Whether an unreadable file has been left alone long enough to count as damaged rather than
    being written: seen unreadable for ``_DAMAGED_S`` or (``trust_mtime``) last modified that
    long ago."""
    if trust_mtime and mtime_ns is not None and time.time_ns() - mtime_ns > _DAMAGED_S * 1e9:
        return True
    return time.monotonic() - first_seen > _DAMAGED_S


class Registry:
    """Models and their versions under ``<storage>/registry`` (a path or a URI).

    Creating a Registry touches nothing; the directories appear on the first publish.
    """

    def __init__(self, storage: str | Path) -> None:
        self._store = Storage(storage).child(REGISTRY_DIR)

    @property
    def root(self) -> str:
        """The registry's location (``<storage>/registry``)."""
        return self._store.location

    def __repr__(self) -> str:
        return f"Registry({self.root!r})"

    # -- reading ---------------------------------------------------------------------------
    def models(self) -> list[str]:
        """Every model with at least one complete version, sorted."""
        return sorted(
            name
            for name, is_dir in self._store.list_dir().items()
            if is_dir and _MODEL_RE.fullmatch(name) and self._version_numbers(name)
        )

    def _version_numbers(self, model: str) -> list[int]:
        """Complete versions (directories named 1, 2, ... holding MANIFEST.json), sorted."""
        ms = self._store.child(model)
        found = [
            int(n) for n, is_dir in ms.list_dir().items() if is_dir and _VERSION_RE.fullmatch(n)
        ]
        return sorted(v for v in found if ms.is_file(f"{v}/{MANIFEST}"))

    def _version(self, model: str, version: int, aliases: Mapping[str, int]) -> ModelVersion:
        path = self.path(model, version)
        try:
            created = str(
                json.loads(self._store.read_bytes(f"{model}/{version}/{MANIFEST}"))["created_at"]
            )
        except (OSError, ValueError, KeyError, TypeError):
            created = ""  # a damaged manifest; loading the bundle will say what is wrong
        tags = tuple(sorted(a for a, v in aliases.items() if v == version))
        return ModelVersion(
            model=model, version=version, path=path, created_at=created, aliases=tags
        )

    def versions(self, model: str) -> list[ModelVersion]:
        """Complete versions of ``model``, oldest first ([] for a model that does not exist).

        Temporary ``.tmp-*`` directories and version directories without MANIFEST.json (a publish
        still in progress on an object store, or a crashed one) are ignored.
        """
        _check_model(model)
        aliases = self.aliases(model)
        return [self._version(model, v, aliases) for v in self._version_numbers(model)]

    def path(self, model: str, version: int) -> str:
        """The location of ``<model>/<version>`` (whether or not it exists)."""
        _check_model(model)
        _check_version(version)
        return self._store.where(f"{model}/{version}")

    def aliases(self, model: str) -> dict[str, int]:
        """alias -> version for ``model`` ({} if it has none)."""
        _check_model(model)
        return dict(self._alias_state(model)["aliases"])

    def history(self, model: str) -> list[dict[str, Any]]:
        """Every alias change of ``model``, oldest first: {"alias", "version", "at"}."""
        _check_model(model)
        return list(self._alias_state(model)["history"])

    def previous(self, model: str, alias: str) -> int | None:
        """The version ``alias`` pointed to before its current one (for rollback), or None."""
        _check_model(model)
        _check_alias(alias)
        state = self._alias_state(model)
        current = state["aliases"].get(alias)
        if current is None:
            return None
        past = [
            _valid_version(e)
            for e in state["history"]
            if isinstance(e, dict) and e.get("alias") == alias and _valid_version(e) is not None
        ]
        while past and past[-1] == current:
            past.pop()
        return past[-1] if past and isinstance(past[-1], int) else None

    def resolve(
        self, model: str, version: int | None = None, alias: str | None = None
    ) -> ModelVersion:
        """One complete version: by number, by alias, or (neither) the ``production`` alias, else
        the latest version. Unknown model/version/alias -> RegistryError listing what exists."""
        if version is not None and alias is not None:
            raise ValueError("resolve() takes a version or an alias, not both")
        _check_model(model)
        existing = self._version_numbers(model)
        if not existing:
            known = self.models()
            raise RegistryError(
                f"unknown model {model!r} in {self.root}; registered models: {', '.join(known) or 'none'}"
            )
        aliases = self.aliases(model)

        def what_exists() -> str:
            tags = ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items())) or "none"
            return f"versions: {', '.join(map(str, existing))}; aliases: {tags}"

        if alias is not None:
            _check_alias(alias)
            if alias not in aliases:
                raise RegistryError(f"model {model!r} has no alias {alias!r}; {what_exists()}")
            version = aliases[alias]
            if version not in existing:
                raise RegistryError(
                    f"alias {alias!r} of model {model!r} points to version {version}, which does not exist; "
                    f"{what_exists()}"
                )
        elif version is not None:
            _check_version(version)
            if version not in existing:
                raise RegistryError(f"model {model!r} has no version {version}; {what_exists()}")
        elif DEFAULT_ALIAS in aliases:
            version = aliases[DEFAULT_ALIAS]
            if version not in existing:
                raise RegistryError(
                    f"alias {DEFAULT_ALIAS!r} of model {model!r} points to version {version}, which does "
                    f"not exist; {what_exists()}"
                )
        else:
            version = existing[-1]
        return self._version(model, version, aliases)

    # -- publishing ------------------------------------------------------------------------
    def publish(
        self, model: str, bundle_dir: str | Path, aliases: Sequence[str] = (), note: str = ""
    ) -> ModelVersion:
        """Copy a complete bundle into the registry as the next version, then set ``aliases`` to it.

        The bundle is verified before and after the copy (BundleError if it is not complete and
        intact). Concurrent publishers get distinct versions (see the module docstring). Temporary
        folders and files that crashed writers left under the model are swept first.
        """
        _check_model(model)
        if isinstance(aliases, str):
            aliases = [aliases]
        wanted = list(dict.fromkeys(_check_alias(a) for a in aliases))
        manifest = verify_bundle(bundle_dir)
        src = Storage(bundle_dir)
        names = sorted(manifest["files"])
        if src.is_file(SIGNATURE):
            names.append(SIGNATURE)  # copied with the files, before MANIFEST.json
        ms = self._store.child(model)
        self._sweep_temp(ms)
        version = (
            self._publish_local(ms, src, names)
            if ms.local
            else self._publish_in_place(ms, src, manifest)
        )
        if wanted:
            self._update_aliases(model, dict.fromkeys(wanted, version), note)
        return self._version(model, version, self.aliases(model))

    def _next_version(self, ms: Storage) -> int:
        """One more than any version directory or claim, complete or not."""
        taken = [int(n) for n in ms.list_dir() if _VERSION_RE.fullmatch(n)]
        taken += [int(n) for n in ms.list_dir(_CLAIMS) if _VERSION_RE.fullmatch(n)]
        return max(taken, default=0) + 1

    @staticmethod
    def _sweep_temp(ms: Storage) -> None:
        """Remove ``.tmp-*`` folders (publishes) and ``*.tmp-*`` files (atomic writes) that a
        crashed writer left in ``<model>/`` and ``.aliases/``: only those in which nothing changed
        for ``_STALE_TMP_NS`` (a live writer's are younger; module docstring). Best effort."""
        now = time.time_ns()
        for where in (ms, ms.child(_ALIAS_LOG)):
            for name, is_dir, _ in where.entries():
                if not (name.startswith(TMP_MARK) if is_dir else TMP_MARK in name):
                    continue
                try:
                    newest = where.newest_mtime(name)
                    if newest is None or now - newest <= _STALE_TMP_NS:
                        continue
                    if is_dir:
                        where.delete_tree(name)
                    else:
                        where.delete_file(name)
                except OSError:  # another publisher swept it meanwhile
                    continue

    def _publish_local(self, ms: Storage, src: Storage, names: list[str]) -> int:
        ms.make_dirs()
        tmp = f"{TMP_MARK}{uuid.uuid4().hex}"
        ms.make_dir(tmp)
        try:
            for name in names:
                ms.copy_from(src, name, f"{tmp}/{name}")
            ms.copy_from(src, MANIFEST, f"{tmp}/{MANIFEST}")
            ms.fsync_tree(tmp)
            ms.touch(tmp)  # live: a sweeping publisher judges the folder by its newest mtime
            verify_bundle(ms.where(tmp))  # the copy, against the manifest it carries
            version = self._next_version(ms)
            for _ in range(_MAX_ATTEMPTS):
                try:
                    ms.rename_dir(tmp, str(version))
                except FileExistsError:  # another publisher took it: try the next one
                    version = max(version + 1, self._next_version(ms))
                    continue
                ms.fsync()
                return version
            raise RegistryError(
                f"{ms.location}: could not claim a version after {_MAX_ATTEMPTS} attempts"
            )
        finally:
            ms.delete_tree(tmp)

    def _publish_in_place(self, ms: Storage, src: Storage, manifest: dict[str, Any]) -> int:
        version = self._next_version(ms)
        same = 0  # back-offs on this number (a crashed claimant's claim blocks it for a while)
        for attempt in range(_MAX_ATTEMPTS):
            claim = f"{_CLAIMS}/{version}"
            if ms.create_exclusive(claim, utc_now().encode()):
                if not ms.exists(str(version)):
                    break
            elif not ms.exists(claim) and same < 10:  # all racers backed off: retry the number
                same += 1
                time.sleep(random.uniform(0, 0.001 * min(attempt + 1, 20)))
                continue
            same = 0
            version = max(version + 1, self._next_version(ms))
        else:
            raise RegistryError(
                f"{ms.location}: could not claim a version after {_MAX_ATTEMPTS} attempts"
            )
        dest = ms.child(str(version))
        if src.is_file(SIGNATURE):
            dest.copy_from(src, SIGNATURE, SIGNATURE)  # before the commit marker
        for name in sorted(manifest["files"]):
            dest.copy_from(src, name, name)
            digest, size = dest.sha256(name)
            entry = manifest["files"][name]
            if digest != entry["sha256"] or size != entry["bytes"]:
                raise BundleError(
                    f"{dest.where(name)}: sha256 mismatch after copying from {src.where(name)}"
                )
        dest.copy_from(src, MANIFEST, MANIFEST)  # last: the commit marker
        verify_bundle(dest.location)
        ms.sweep_claims(_CLAIMS, min_age_ns=_KEEP_REVISION_NS)
        return version

    # -- aliases ---------------------------------------------------------------------------
    def set_alias(self, model: str, alias: str, version: int, note: str = "") -> None:
        """Point ``alias`` at an existing version (atomic; recorded in the history with ``note``,
        e.g. why it moved)."""
        _check_model(model)
        _check_alias(alias)
        _check_version(version)
        if not self._store.is_file(f"{model}/{version}/{MANIFEST}"):
            existing = self._version_numbers(model)
            if not existing:
                raise RegistryError(
                    f"unknown model {model!r} in {self.root}; registered models: {', '.join(self.models()) or 'none'}"
                )
            raise RegistryError(
                f"model {model!r} has no version {version}; versions: {', '.join(map(str, existing))}"
            )
        self._update_aliases(model, {alias: version}, note)

    def rollback(self, model: str, alias: str = DEFAULT_ALIAS) -> tuple[int, int]:
        """Point ``alias`` back to the version it held before the current one; (from, to).

        Versions left by an earlier rollback are skipped, so rolling back twice walks two steps
        back instead of returning to where the first rollback started.
        """
        _check_model(model)
        _check_alias(alias)
        state = self._alias_state(model)
        current = state["aliases"].get(alias)
        if current is None:
            raise RegistryError(f"model {model!r} has no {alias!r} alias to roll back")
        stack: list[int] = []  # the alias's lineage, with rolled-back versions taken off
        for e in state["history"]:
            v = _valid_version(e)
            if v is None or e.get("alias") != alias:  # malformed entries (edited by hand) skipped
                continue
            if str(e.get("note", "")).startswith(ROLLBACK_NOTE):
                while stack and stack[-1] != v:
                    stack.pop()
                if not stack:
                    stack.append(v)
            elif not stack or stack[-1] != v:
                stack.append(v)
        if len(stack) < 2 or stack[-1] != current:
            raise RegistryError(
                f"model {model!r}: {alias!r} (v{current}) has no earlier version to roll back to"
            )
        target = stack[-2]
        self.set_alias(model, alias, target, note=f"{ROLLBACK_NOTE} from v{current}")
        return current, target

    def _alias_state(self, model: str) -> dict[str, Any]:
        """The newest alias state: the newest readable revision in the log, or aliases.json if
        newer (see :meth:`_read_state`)."""
        return self._read_state(model)[0]

    def _read_state(self, model: str, writing: bool = False) -> tuple[dict[str, Any], int]:
        """(the newest readable alias state, the highest revision number in the log).

        An unparsable newest revision is waited for while it may still be being written, then
        skipped as damaged (a RegistryWarning names it); ``writing`` callers only skip it after
        seeing it unreadable for ``_DAMAGED_S`` themselves (never by its mtime)."""
        ms = self._store.child(model)
        log = ms.child(_ALIAS_LOG)
        problem = ""
        first_seen: dict[str, float] = {}  # file -> when it was first found unreadable

        def damaged(name: str, mtime: int | None) -> bool:
            return _damaged(mtime, first_seen.setdefault(name, time.monotonic()), not writing)

        for attempt in range(50):
            listed = {
                m.group(1): mtime for n, _, mtime in log.entries() if (m := _REV_RE.fullmatch(n))
            }
            revs = sorted(listed, reverse=True)
            top = int(revs[0]) if revs else 0
            state: dict[str, Any] | None = None
            used = ""  # where the state comes from
            skipped: list[tuple[str, str]] = []  # (damaged file, why)
            wait = False
            for rev in revs:
                name = f"{rev}.json"
                try:
                    state = _parse_state(log.read_bytes(name), log.where(name), int(rev))
                    used = log.where(name)
                    break
                except FileNotFoundError:  # pruned (or removed) between listing and reading
                    continue
                except _Unreadable as e:
                    problem = str(e)
                    if rev == revs[0] and not damaged(name, listed[rev]):
                        wait = True  # perhaps still being written (non-atomic writes)
                        break
                    skipped.append((log.where(name), e.reason))
            if wait:
                time.sleep(min(0.005 * (attempt + 1), 0.05))
                continue
            # aliases.json only matters when it is newer than the log (written by hand or by an
            # older rayline) or nothing in the log is readable; while a readable log exists, an
            # unreadable snapshot (being rewritten in place on a non-local filesystem) is ignored.
            try:
                snapshot = _parse_state(ms.read_bytes(ALIASES_FILE), ms.where(ALIASES_FILE))
            except FileNotFoundError:
                snapshot = None
            except _Unreadable as e:
                snapshot = None
                if state is None:
                    problem = str(e)
                    if not damaged(ALIASES_FILE, ms.newest_mtime(ALIASES_FILE)):
                        time.sleep(min(0.005 * (attempt + 1), 0.05))
                        continue
                    fallback = (
                        f"every alias revision in {log.location} is damaged too "
                        f"({', '.join(w for w, _ in skipped)})"
                        if skipped
                        else "there is no alias revision log to fall back on"
                    )
                    raise RegistryError(
                        f"{problem}; {fallback}: restore {ALIASES_FILE} from a backup, or "
                        "remove it to start the aliases afresh"
                    ) from None
            if snapshot is not None and (state is None or snapshot["revision"] > state["revision"]):
                state = snapshot
                used = f"{ms.where(ALIASES_FILE)} (revision {snapshot['revision']})"
            if state is None:
                if skipped:
                    raise RegistryError(
                        f"{log.location}: no alias revision is readable (damaged: "
                        f"{', '.join(w for w, _ in skipped)}; {problem}) and there is no "
                        f"{ALIASES_FILE}: restore a revision file from a backup, or remove the "
                        "damaged ones to start the aliases afresh"
                    )
                state = _empty_state()
            if skipped:
                more = f" (and {len(skipped) - 1} older)" if len(skipped) > 1 else ""
                warnings.warn(
                    RegistryWarning(
                        f"{skipped[0][0]}: damaged ({skipped[0][1]}) — skipped{more}; the aliases "
                        f"of {model!r} are read from {used}"
                    ),
                    stacklevel=3,
                )
            return state, top
        raise RegistryError(
            f"{log.location}: could not read the alias state ({problem or 'contention'})"
        )

    def _update_aliases(self, model: str, updates: Mapping[str, int], note: str = "") -> None:
        ms = self._store.child(model)
        log = ms.child(_ALIAS_LOG)
        for attempt in range(_MAX_ATTEMPTS):
            state, top = self._read_state(model, writing=True)
            revision = max(state["revision"], top) + 1  # above a damaged newest revision too
            if revision > _MAX_REVISION:
                raise RegistryError(
                    f"{log.location}: the alias revision log is full (revision {_MAX_REVISION})"
                )
            at = utc_now()
            new = {
                "format": 1,
                "revision": revision,
                "aliases": {**state["aliases"], **updates},
                "history": [
                    *state["history"],
                    *(
                        {"alias": a, "version": v, "at": at, **({"note": note} if note else {})}
                        for a, v in updates.items()
                    ),
                ],
            }
            if log.create_exclusive(f"{revision:012d}.json", _dumps(new)):
                break
            time.sleep(random.uniform(0, 0.001 * min(attempt + 1, 20)))  # lost the race: re-read
        else:
            raise RegistryError(
                f"{log.location}: could not update aliases after {_MAX_ATTEMPTS} attempts"
            )
        self._write_snapshot(model)
        self._prune(log, revision)

    def _write_snapshot(self, model: str) -> None:
        """Rewrite aliases.json from the newest revision until no newer one appeared meanwhile, so
        a slow writer never leaves an older snapshot behind."""
        ms = self._store.child(model)
        for _ in range(100):
            state = self._alias_state(model)
            ms.write_bytes(ALIASES_FILE, _dumps(state))
            if self._alias_state(model)["revision"] == state["revision"]:
                return

    @staticmethod
    def _prune(log: Storage, revision: int) -> None:
        cutoff = revision - _KEEP_REVISIONS
        if cutoff < 1:
            return
        now = time.time_ns()
        for name, _, mtime in log.entries():
            m = _REV_RE.fullmatch(name)
            if (
                m
                and int(m.group(1)) < cutoff
                and mtime is not None
                and now - mtime > _KEEP_REVISION_NS
            ):
                log.delete_file(name)
        log.sweep_claims(min_age_ns=_KEEP_REVISION_NS)


__all__ = ["ModelVersion", "Registry", "RegistryError"]
