"""Model bundles: a directory of files plus a MANIFEST.json that carries a sha256 for every file.

Nothing half-written is ever visible:

* On a local (or shared, POSIX-mounted) filesystem a bundle is written into a new temporary
  directory next to its destination, MANIFEST.json last, everything fsynced, and the temporary
  directory is then renamed into place (``rename`` is atomic).
* On a non-local filesystem (an object store reached through a URI such as ``s3://...``) there is
  no atomic directory rename, so the files are written under the final prefix with MANIFEST.json
  written **last**. MANIFEST.json is the commit marker.

**Commit-marker rule**: every reader treats a bundle directory without MANIFEST.json as not
existing ("incomplete or not a bundle"). It holds for both backends, so it also protects local
readers from anything that was not written through this module.

Every load checks each file against its MANIFEST entry (sha256 and size) and refuses unlisted
files and symbolic links, with a message that names the bundle and the file. The sha256s detect
**corruption and half-written bundles** (a bad disk or copy, a crashed writer, an accidental edit);
they are *not* a defence against a malicious writer: anyone who can write a bundle can also
rewrite its MANIFEST.json. No pickle anywhere: bundles hold JSON and the model's own serialised
bytes.

**Signing** (optional): when the environment variable ``RAYLINE_BUNDLE_KEY`` is set,
:func:`write_bundle` also writes ``SIGNATURE`` (an HMAC-SHA256 of the exact MANIFEST.json bytes
under that key; the manifest pins every file's sha256, so the signature covers every file) and
every verifying read (:func:`verify_bundle`, :func:`read_bundle_file`, ``Predictor.load``)
refuses a bundle that is unsigned or signed with another key. Whoever holds the key can sign, so
it must be kept from anyone who should not be able to publish models. With the variable unset,
nothing changes: no SIGNATURE is written, unsigned bundles load, and a signed bundle loads too
(its signature is then not checked). Set to an empty string, it is an error (fails closed).

All filesystem access goes through :class:`Storage`, a small wrapper over ``pyarrow.fs`` (a
``LocalFileSystem`` for plain paths, ``FileSystem.from_uri`` for URIs), so another backend only
has to be handled in one place.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import hmac
import json
import os
import posixpath
import re
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import pyarrow.fs as pafs

from components import uris

MANIFEST = "MANIFEST.json"
MANIFEST_FORMAT = 1
TMP_MARK = ".tmp-"
_CHUNK = 1 << 20
SIGNATURE = "SIGNATURE"
KEY_ENV = "RAYLINE_BUNDLE_KEY"
_SIGNATURE_ALGORITHM = "hmac-sha256"
_HEX64 = re.compile(r"[0-9a-f]{64}")
# A claim (non-local exclusive create) older than this is considered abandoned by a crashed writer.
_STALE_CLAIM_NS = 300 * 1_000_000_000


class BundleError(Exception):
    """Missing, incomplete, corrupted, unsigned or wrongly signed bundle, or one holding a symbolic
    link; the message names the bundle path and the file."""


def _temp_beside(path: str) -> str:
    """A new temporary name in ``path``'s folder, hidden (a leading dot): a reader listing the
    folder meanwhile (pyarrow datasets, Ray Data) skips it rather than opening a file that is
    about to be renamed away."""
    folder, base = os.path.split(path)
    return os.path.join(folder, f".{base}{TMP_MARK}{uuid.uuid4().hex}")


def utc_now() -> str:
    """The current UTC time as ISO 8601 with milliseconds and a ``Z`` suffix."""
    now = dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _is_local_fs(fs: Any) -> bool:
    """Whether ``fs`` is the local filesystem (atomic rename, hard links and fsync available)."""
    return isinstance(fs, pafs.LocalFileSystem)


def _fsync_dir(path: str) -> None:
    """fsync a directory so a rename/create inside it is durable (best effort; no-op on Windows)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Storage:
    """Filesystem access for bundles and the registry, rooted at one location.

    ``location`` is a plain path (``LocalFileSystem``) or a URI (``FileSystem.from_uri``). Methods
    take paths relative to the root, with ``/`` separators; ``""`` is the root itself.

    ``local`` storages write through a temporary name and ``os.replace``/``os.rename`` (atomic) and
    fsync; non-local ones write in place and rely on the commit-marker rule (module docstring).
    """

    def __init__(self, location: str | os.PathLike[str]) -> None:
        loc = os.fspath(location)
        self._uri: SplitResult | None
        if uris.is_uri(loc):
            fs, path = uris.filesystem(loc)
            self._uri = urlsplit(loc)
            self._uri = self._uri._replace(path=self._uri.path.rstrip("/"))
            self.location = urlunsplit(self._uri)
        else:
            fs, path = pafs.LocalFileSystem(), os.path.abspath(loc)
            self._uri = None
            self.location = path
        self.fs = fs
        self.root = path.rstrip("/") or "/"
        self.local = _is_local_fs(fs)
        self._posix = isinstance(fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"Storage({self.location!r})"

    # -- paths -----------------------------------------------------------------------------
    def _derive(self, root: str, uri_path: str | None, location: str) -> Storage:
        new = object.__new__(Storage)
        new.fs, new.local, new.root, new.location = self.fs, self.local, root, location
        new._posix = self._posix
        new._uri = (
            self._uri._replace(path=uri_path)
            if self._uri is not None and uri_path is not None
            else None
        )
        return new

    def path(self, rel: str = "") -> str:
        """The filesystem path (as pyarrow.fs sees it) of ``rel``."""
        return posixpath.join(self.root, rel) if rel else self.root

    def where(self, rel: str = "") -> str:
        """The user-facing location (plain path or URI) of ``rel``, for messages and callers."""
        if not rel:
            return self.location
        if self._uri is not None:
            return urlunsplit(self._uri._replace(path=posixpath.join(self._uri.path or "/", rel)))
        return posixpath.join(self.location, rel)

    def child(self, rel: str) -> Storage:
        """A Storage rooted at ``rel`` below this one (same filesystem; nothing is created)."""
        uri_path = posixpath.join(self._uri.path or "/", rel) if self._uri is not None else None
        return self._derive(self.path(rel), uri_path, self.where(rel))

    def split(self) -> tuple[Storage, str]:
        """(the parent directory's Storage, this directory's name)."""
        parent_root, name = posixpath.split(self.root)
        if not name:
            raise ValueError(f"{self.location}: has no parent directory")
        if self._uri is not None:
            parent_uri = posixpath.dirname(self._uri.path)
            loc = urlunsplit(self._uri._replace(path=parent_uri))
            return self._derive(parent_root, parent_uri, loc), name
        return self._derive(parent_root, None, os.path.dirname(self.location)), name

    # -- queries ---------------------------------------------------------------------------
    # On the local filesystem listings and existence checks use os directly (cheaper, and an
    # entry that vanishes mid-listing is simply skipped). No listing, local or remote, is a
    # snapshot: an entry created or deleted while it runs may or may not appear; only entries
    # present for the whole listing are guaranteed. The claim protocol below relies on that.
    def _type(self, rel: str) -> Any:
        return self.fs.get_file_info(self.path(rel)).type

    def exists(self, rel: str = "") -> bool:
        if self._posix:
            return os.path.lexists(self.path(rel))
        return bool(self._type(rel) != pafs.FileType.NotFound)

    def is_file(self, rel: str) -> bool:
        if self._posix:
            return os.path.isfile(self.path(rel))
        return bool(self._type(rel) == pafs.FileType.File)

    def is_dir(self, rel: str = "") -> bool:
        if self._posix:
            return os.path.isdir(self.path(rel))
        return bool(self._type(rel) == pafs.FileType.Directory)

    def entries(self, rel: str = "") -> list[tuple[str, bool, int | None]]:
        """(name, is_dir, mtime_ns or None) of each entry directly under ``rel`` ([] if missing).
        An entry that disappears while being listed is left out."""
        return self._entries_at(self.path(rel))

    def _entries_at(self, path: str) -> list[tuple[str, bool, int | None]]:
        if self._posix:
            out: list[tuple[str, bool, int | None]] = []
            try:
                with os.scandir(path) as it:
                    for e in it:
                        try:
                            out.append((e.name, e.is_dir(), e.stat().st_mtime_ns))
                        except FileNotFoundError:
                            continue
            except (FileNotFoundError, NotADirectoryError):
                return []
            return out
        sel = pafs.FileSelector(path, allow_not_found=True, recursive=False)
        try:
            infos = self.fs.get_file_info(sel)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [(i.base_name, i.type == pafs.FileType.Directory, i.mtime_ns) for i in infos]

    def list_dir(self, rel: str = "") -> dict[str, bool]:
        """The entries directly under ``rel``: name -> is_dir ({} when ``rel`` does not exist)."""
        return {name: is_dir for name, is_dir, _ in self.entries(rel)}

    def walk_files(self, rel: str = "") -> list[str]:
        """Every file below ``rel``, as sorted paths relative to ``rel``."""
        base = self.path(rel)
        if self._posix:
            found = []
            for dirpath, _, filenames in os.walk(base):
                sub = os.path.relpath(dirpath, base).replace(os.sep, "/")
                found += [n if sub == "." else f"{sub}/{n}" for n in filenames]
            return sorted(found)
        prefix = base.rstrip("/") + "/"
        sel = pafs.FileSelector(base, allow_not_found=True, recursive=True)
        try:
            infos = self.fs.get_file_info(sel)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(
            i.path[len(prefix) :]
            for i in infos
            if i.type == pafs.FileType.File and i.path.startswith(prefix)
        )

    def is_link(self, rel: str) -> bool:
        """Whether ``rel`` itself is a symbolic link (False on filesystems without links)."""
        return self._posix and os.path.islink(self.path(rel))

    def links(self, rel: str = "") -> list[str]:
        """Every symbolic link below ``rel`` (to a file, a folder or nothing), as sorted paths
        relative to ``rel``; links are listed, never followed ([] on filesystems without links)."""
        if not self._posix:
            return []
        base = self.path(rel)
        found = []
        for dirpath, dirnames, filenames in os.walk(base):  # followlinks=False
            sub = os.path.relpath(dirpath, base).replace(os.sep, "/")
            for n in dirnames + filenames:
                if os.path.islink(os.path.join(dirpath, n)):
                    found.append(n if sub == "." else f"{sub}/{n}")
        return sorted(found)

    def newest_mtime(self, rel: str = "") -> int | None:
        """The newest modification time (ns) of ``rel`` and everything below it (links are not
        followed); None if it does not exist or the filesystem reports no times."""
        if self._posix:
            newest: int | None = None
            base = self.path(rel)
            try:
                newest = os.lstat(base).st_mtime_ns
            except FileNotFoundError:
                return None
            for dirpath, dirnames, filenames in os.walk(base):
                for n in dirnames + filenames:
                    try:
                        t = os.lstat(os.path.join(dirpath, n)).st_mtime_ns
                    except FileNotFoundError:
                        continue
                    newest = t if newest is None else max(newest, t)
            return newest
        times = [self.fs.get_file_info(self.path(rel)).mtime_ns]
        sel = pafs.FileSelector(self.path(rel), allow_not_found=True, recursive=True)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            times += [i.mtime_ns for i in self.fs.get_file_info(sel)]
        known = [t for t in times if t is not None]
        return max(known) if known else None

    def read_bytes(self, rel: str) -> bytes:
        """The file's content; FileNotFoundError if it does not exist."""
        if not self.is_file(rel):
            raise FileNotFoundError(self.where(rel))
        with self.fs.open_input_stream(self.path(rel)) as f:
            return bytes(f.read())

    def sha256(self, rel: str) -> tuple[str, int]:
        """(hex sha256, size in bytes) of a file, streamed."""
        h, n = hashlib.sha256(), 0
        with self.fs.open_input_stream(self.path(rel)) as f:
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    break
                h.update(chunk)
                n += len(chunk)
        return h.hexdigest(), n

    # -- writes ----------------------------------------------------------------------------
    def make_dirs(self, rel: str = "") -> None:
        """Create ``rel`` and its parents if missing."""
        if self.local:
            os.makedirs(self.path(rel), exist_ok=True)
        else:
            self.fs.create_dir(self.path(rel), recursive=True)

    def make_dir(self, rel: str) -> None:
        """Create ``rel`` (its parent must exist); FileExistsError if it exists (local)."""
        if self.local:
            os.mkdir(self.path(rel))
        else:
            self.fs.create_dir(self.path(rel), recursive=True)

    def write_bytes(self, rel: str, data: bytes, *, atomic: bool = True) -> None:
        """Write a file, creating parent directories.

        Local: with ``atomic`` the data goes to ``<name>.tmp-<uuid>`` (fsynced) and is moved over
        ``rel`` with ``os.replace``, so readers see the old or the new file, never a partial one;
        without it (inside a not-yet-visible temporary directory) it is written and fsynced in
        place. Non-local: written in place (an object store's PUT is all-or-nothing).
        """
        path = self.path(rel)
        if not self.local:
            self.fs.create_dir(posixpath.dirname(path), recursive=True)
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        target = _temp_beside(path) if atomic else path
        try:
            # "x": always a new file (never through a link planted at the name; the non-atomic
            # case only writes into a new temporary directory)
            with open(target, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if atomic:
                os.replace(target, path)
        finally:
            if atomic and os.path.exists(target):
                os.unlink(target)
        _fsync_dir(os.path.dirname(path))

    def copy_from(self, src: Storage, src_rel: str, rel: str) -> None:
        """Stream ``src_rel`` of ``src`` into ``rel`` here (created anew; fsynced when local)."""
        path = self.path(rel)
        with src.fs.open_input_stream(src.path(src_rel)) as fin:
            if self.local:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "xb") as fout:
                    while chunk := fin.read(_CHUNK):
                        fout.write(chunk)
                    fout.flush()
                    os.fsync(fout.fileno())
            else:
                self.fs.create_dir(posixpath.dirname(path), recursive=True)
                with self.fs.open_output_stream(path) as fout:
                    while chunk := fin.read(_CHUNK):
                        fout.write(chunk)

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` with ``data`` only if it does not exist; True if this call created it.

        Local: the data is written and fsynced under a temporary name, then hard-linked to ``rel``
        (``link`` fails atomically if the name exists, also on NFS), so the file appears complete.
        Where hard links are unsupported it falls back to ``O_CREAT|O_EXCL`` (the file may then be
        seen briefly while being written; readers retry).

        Non-local (no conditional write in pyarrow.fs): a claim protocol. The writer puts
        ``<name>.claim-<uuid>`` next to ``rel`` and lists the directory; it proceeds only if
        neither ``rel`` nor any other live claim is there. A loser deletes its claim; the winner
        keeps it, so it is present for the whole of any rival's later listing (a listing is not a
        snapshot: had the winner deleted its claim, a rival's listing could miss both the claim
        and the just-created ``rel``). With read-after-write consistent listings (local disks,
        S3, GCS) at most one of several racing writers proceeds; several may all back off and
        retry. Claims older than five minutes are ignored as abandoned; :meth:`sweep_claims`
        removes old ones.
        """
        path = self.path(rel)
        parent, base = posixpath.split(path)
        if self.local:
            os.makedirs(parent, exist_ok=True)
            tmp = _temp_beside(path)
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
                except OSError as e:
                    if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                        return False
                    return self._create_exclusive_open(path, data)
            finally:
                if os.path.lexists(tmp):
                    os.unlink(tmp)
            _fsync_dir(parent)
            return True
        self.fs.create_dir(parent, recursive=True)
        claim = f"{base}.claim-{uuid.uuid4().hex}"
        claim_path = posixpath.join(parent, claim)
        with self.fs.open_output_stream(claim_path) as f:
            f.write(b"")
        won = False
        try:
            now = time.time_ns()
            for name, _, mtime in self._entries_at(parent):
                if name == base:
                    return False
                live = mtime is None or now - mtime < _STALE_CLAIM_NS
                if name.startswith(f"{base}.claim-") and name != claim and live:
                    return False
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            won = True
            return True
        finally:
            if not won:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.delete_file(claim_path)

    def sweep_claims(self, rel: str = "", min_age_ns: int = 600 * 1_000_000_000) -> None:
        """Delete ``*.claim-*`` files directly under ``rel`` older than ``min_age_ns``."""
        now = time.time_ns()
        for name, is_dir, mtime in self.entries(rel):
            if ".claim-" in name and not is_dir and mtime is not None and now - mtime > min_age_ns:
                self.delete_file(f"{rel}/{name}" if rel else name)

    @staticmethod
    def _create_exclusive_open(path: str, data: bytes) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(os.path.dirname(path))
        return True

    def rename_dir(self, src: str, dst: str) -> None:
        """Atomically rename directory ``src`` to ``dst`` (local only).

        Raises FileExistsError if ``dst`` exists and is not empty (``rename(2)`` refuses to replace
        a non-empty directory, which is what makes concurrent writers safe).
        """
        if not self.local:
            raise NotImplementedError(f"{self.location}: atomic rename needs a local filesystem")
        try:
            os.rename(self.path(src), self.path(dst))
        except FileExistsError:
            raise
        except OSError as e:
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise FileExistsError(e.errno, os.strerror(e.errno), self.where(dst)) from None
            raise

    def fsync_tree(self, rel: str = "") -> None:
        """fsync every directory below and including ``rel`` (local only; files are fsynced on write)."""
        if not self.local:
            return
        for dirpath, _, _ in os.walk(self.path(rel), topdown=False):
            _fsync_dir(dirpath)

    def touch(self, rel: str = "") -> None:
        """Set ``rel``'s modification time to now (local only; a no-op elsewhere)."""
        if self.local:
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path(rel))

    def fsync(self, rel: str = "") -> None:
        """fsync directory ``rel`` (local only)."""
        if self.local:
            _fsync_dir(self.path(rel))

    def delete_file(self, rel: str) -> None:
        """Delete a file; missing is fine."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self.path(rel))

    def read_text(self, rel: str) -> str:
        """A text file's content (UTF-8); FileNotFoundError if it does not exist."""
        return self.read_bytes(rel).decode()

    def write_text(self, rel: str, text: str) -> None:
        """Write a text file (UTF-8) atomically (see :meth:`write_bytes`)."""
        self.write_bytes(rel, text.encode())

    def remove(self, rel: str) -> None:
        """Delete a file or a directory tree at ``rel`` (a link itself, never its target);
        missing is fine."""
        if self._posix:
            path = self.path(rel)
            if os.path.islink(path) or os.path.isfile(path):
                os.remove(path)
            elif os.path.isdir(path):
                import shutil

                shutil.rmtree(path)
            return
        kind = self._type(rel)
        if kind == pafs.FileType.File:
            self.delete_file(rel)
        elif kind == pafs.FileType.Directory:
            self.delete_tree(rel)

    def delete_tree(self, rel: str) -> None:
        """Delete a directory and everything in it; missing is fine."""
        if self.is_dir(rel):
            with contextlib.suppress(FileNotFoundError):
                self.fs.delete_dir(self.path(rel))


# -- bundles ----------------------------------------------------------------------------------


def check_name(name: str) -> str:
    """A bundle file name: relative, ``/``-separated, no ``.``/``..``/empty parts, not
    MANIFEST.json or SIGNATURE."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"bundle file name must be a non-empty string, got {name!r}")
    if name.startswith("/") or "\\" in name or "\x00" in name or re.match(r"^[A-Za-z]:", name):
        raise ValueError(f"bundle file name {name!r} must be a plain relative name")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(
            f"bundle file name {name!r} must be a plain relative name (no '', '.' or '..' parts)"
        )
    if parts[0] in (MANIFEST, SIGNATURE):
        raise ValueError(
            f"bundle file name {name!r} is reserved: {parts[0]} is written by write_bundle"
        )
    return name


def bundle_key() -> bytes | None:
    """The signing key from ``RAYLINE_BUNDLE_KEY`` (None when unset; see the module docstring).

    Set but empty is a BundleError rather than "no key", so a key that failed to reach a
    process (``RAYLINE_BUNDLE_KEY=$UNSET``) never turns checking off silently."""
    value = os.environ.get(KEY_ENV)
    if value is None:
        return None
    if not value:
        raise BundleError(
            f"{KEY_ENV} is set but empty: set it to the bundle signing key, or unset it to write "
            "and load unsigned bundles"
        )
    return value.encode("utf-8", "surrogateescape")


def _key_id(key: bytes) -> str:
    """A short public name for a key (an HMAC of a fixed string: it reveals nothing of the key),
    so an error can say that a bundle was signed with a different key."""
    return hmac.new(key, b"rayline bundle key id", hashlib.sha256).hexdigest()[:16]


def _manifest_mac(key: bytes, manifest: bytes) -> str:
    return hmac.new(key, manifest, hashlib.sha256).hexdigest()


def _signature(key: bytes, manifest: bytes) -> bytes:
    """The SIGNATURE file for ``manifest`` (the exact MANIFEST.json bytes)."""
    doc = {
        "algorithm": _SIGNATURE_ALGORITHM,
        "key_id": _key_id(key),
        "manifest_hmac": _manifest_mac(key, manifest),
    }
    return _dumps(doc)


def _check_signature(store: Storage, manifest: bytes, key: bytes) -> None:
    """Raise BundleError unless SIGNATURE holds ``key``'s HMAC of ``manifest``."""
    where = store.where(SIGNATURE)
    try:
        raw = store.read_bytes(SIGNATURE)
    except FileNotFoundError:
        raise BundleError(
            f"{store.location}: the bundle is unsigned (no {SIGNATURE}) but {KEY_ENV} is set, so "
            f"only bundles signed with that key are accepted — write it again with the key set, "
            f"or unset {KEY_ENV} to accept unsigned bundles"
        ) from None
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        doc = None
    mac = doc.get("manifest_hmac") if isinstance(doc, dict) else None
    if (
        not isinstance(doc, dict)
        or doc.get("algorithm") != _SIGNATURE_ALGORITHM
        or not isinstance(mac, str)
        or not _HEX64.fullmatch(mac)
    ):
        raise BundleError(
            f"{where}: not a valid {_SIGNATURE_ALGORITHM} signature — the bundle {store.location} "
            "is refused"
        )
    expected = _manifest_mac(key, manifest)
    if hmac.compare_digest(mac.encode("ascii"), expected.encode("ascii")):
        return
    theirs, ours = doc.get("key_id"), _key_id(key)
    if isinstance(theirs, str) and not hmac.compare_digest(
        theirs.encode("utf-8", "replace"), ours.encode("ascii")
    ):
        raise BundleError(
            f"{where}: the bundle {store.location} was signed with a different key (key id "
            f"{theirs[:16]!r}; {KEY_ENV} here is key id {ours!r}) — it is refused"
        )
    raise BundleError(
        f"{where}: the signature does not match {MANIFEST} — the key differs or the bundle "
        f"{store.location} was modified after it was signed; it is refused"
    )


def _dumps(doc: Any) -> bytes:
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def write_bundle(directory: str | Path, files: Mapping[str, bytes]) -> Path | str:
    """Write a bundle to ``directory``, which must not exist; returns its location.

    Local: files go into a new temporary directory next to ``directory``, then MANIFEST.json
    ({"format": 1, "created_at": ..., "files": {name: {"sha256": ..., "bytes": n}}}) last;
    everything is fsynced and the temporary directory is renamed to ``directory``. Non-local: the
    files are written in place with MANIFEST.json last (commit-marker rule, module docstring).
    Every file is created new (``O_EXCL``), so the writer never writes through a symbolic link.

    With ``RAYLINE_BUNDLE_KEY`` set, a SIGNATURE file (HMAC-SHA256 of the MANIFEST.json bytes) is
    written just before MANIFEST.json; unset, the bundle is exactly as without signing support.

    Returns a ``Path`` (absolute) for a local path and the URI string for a URI.
    Raises ValueError for a bad file name and BundleError if ``directory`` already exists.
    """
    entries: dict[str, dict[str, Any]] = {}
    for name in sorted(files):
        check_name(name)
        data = files[name]
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValueError(
                f"bundle file {name!r}: content must be bytes, got {type(data).__name__}"
            )
        entries[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    for name in entries:
        head = name.split("/")
        for i in range(1, len(head)):
            if "/".join(head[:i]) in entries:
                raise ValueError(
                    f"bundle file name {name!r} needs {'/'.join(head[:i])!r} to be a directory"
                )
    manifest = _dumps({"format": MANIFEST_FORMAT, "created_at": utc_now(), "files": entries})
    key = bundle_key()
    signature = None if key is None else _signature(key, manifest)

    store = Storage(directory)
    if store.exists():
        raise BundleError(
            f"{store.location}: already exists — a bundle is written once, to a new directory"
        )
    if not store.local:
        for name in entries:
            store.write_bytes(name, bytes(files[name]))
        if signature is not None:
            store.write_bytes(SIGNATURE, signature)
        store.write_bytes(MANIFEST, manifest)
        return store.location

    parent, base = store.split()
    parent.make_dirs()
    tmp = f".{base}{TMP_MARK}{uuid.uuid4().hex}"
    parent.make_dir(tmp)
    try:
        for name in entries:
            parent.write_bytes(f"{tmp}/{name}", bytes(files[name]), atomic=False)
        if signature is not None:
            parent.write_bytes(f"{tmp}/{SIGNATURE}", signature, atomic=False)
        parent.write_bytes(f"{tmp}/{MANIFEST}", manifest, atomic=False)
        parent.fsync_tree(tmp)
        try:
            parent.rename_dir(tmp, base)
        except FileExistsError:
            raise BundleError(
                f"{store.location}: already exists — a bundle is written once, to a new directory"
            ) from None
        parent.fsync()
    finally:
        parent.delete_tree(tmp)
    return Path(store.location) if store._uri is None else store.location


def _link_error(store: Storage, name: str) -> BundleError:
    return BundleError(
        f"{store.where(name)}: is a symbolic link — a bundle holds only regular files and "
        "folders; links are refused, never followed"
    )


def _load_manifest(store: Storage) -> dict[str, Any]:
    """The parsed MANIFEST.json; with a key set (:func:`bundle_key`) its signature is checked
    first."""
    where = store.where(MANIFEST)
    for name in (MANIFEST, SIGNATURE):
        if store.is_link(name):
            raise _link_error(store, name)
    key = bundle_key()
    try:
        raw = store.read_bytes(MANIFEST)
    except FileNotFoundError:
        what = "incomplete or not a bundle" if store.is_dir() else "no such bundle directory"
        raise BundleError(f"{where}: missing — {what}") from None
    if key is not None:
        _check_signature(store, raw, key)
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{where}: not valid JSON ({e}) — the bundle is damaged") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if (
        not isinstance(doc, dict)
        or doc.get("format") != MANIFEST_FORMAT
        or not isinstance(files, dict)
    ):
        raise BundleError(f"{where}: not a format-{MANIFEST_FORMAT} bundle manifest")
    for name, entry in files.items():
        try:
            check_name(name)
        except ValueError as e:
            raise BundleError(f"{where}: lists an unsafe file name ({e})") from None
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not isinstance(entry.get("bytes"), int)
        ):
            raise BundleError(f"{where}: entry for {name!r} needs 'sha256' (str) and 'bytes' (int)")
    return doc


def _modified(store: Storage, name: str) -> BundleError:
    return BundleError(
        f"{store.where(name)}: sha256 mismatch — the bundle was modified after it was written"
    )


def verify_bundle(directory: str | Path) -> dict[str, Any]:
    """Check every file against MANIFEST.json and return the manifest.

    Raises BundleError if MANIFEST.json is missing (incomplete or not a bundle) or malformed, a
    listed file is missing, a file's sha256 or size differs, a file is not listed, or anything in
    the bundle is a symbolic link (the bundle directory itself may be one). This detects
    corruption and half-written bundles, not a malicious writer (who can rewrite MANIFEST.json
    too); for that set ``RAYLINE_BUNDLE_KEY``: the bundle must then carry a SIGNATURE made with
    that key (BundleError if it is unsigned or signed with another key). With the variable unset
    a SIGNATURE file is allowed but not checked.
    """
    store = Storage(directory)
    links = store.links()
    if links:
        more = f" (and {len(links) - 1} more)" if len(links) > 1 else ""
        raise BundleError(f"{_link_error(store, links[0])}{more}")
    manifest = _load_manifest(store)
    files: dict[str, dict[str, Any]] = manifest["files"]
    for name in sorted(files):
        if not store.is_file(name):
            raise BundleError(
                f"{store.where(name)}: listed in {MANIFEST} but missing — the bundle is incomplete"
            )
        digest, size = store.sha256(name)
        if digest != files[name]["sha256"] or size != files[name]["bytes"]:
            raise _modified(store, name)
    extra = [n for n in store.walk_files() if n not in (MANIFEST, SIGNATURE) and n not in files]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise BundleError(
            f"{store.where(extra[0])}: not listed in {MANIFEST}{more} — the bundle was modified after it was written"
        )
    return manifest


def read_bundle_file(directory: str | Path, name: str, verify: bool = True) -> bytes:
    """One file of a bundle. With ``verify`` (default) it must be listed in MANIFEST.json and match
    its sha256, and neither it nor a folder above it inside the bundle may be a symbolic link
    (with ``RAYLINE_BUNDLE_KEY`` set, the manifest's signature is checked too); use
    ``verify=False`` after :func:`verify_bundle` has checked the whole bundle."""
    check_name(name)
    store = Storage(directory)
    entry: dict[str, Any] | None = None
    if verify:
        entry = _load_manifest(store)["files"].get(name)
        if entry is None:
            raise BundleError(f"{store.where(name)}: not listed in {MANIFEST}")
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            if store.is_link("/".join(parts[:i])):
                raise _link_error(store, "/".join(parts[:i]))
    try:
        data = store.read_bytes(name)
    except FileNotFoundError:
        raise BundleError(f"{store.where(name)}: missing from the bundle") from None
    if entry is not None and (
        len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]
    ):
        raise _modified(store, name)
    return data


def read_json(directory: str | Path, name: str) -> Any:
    """A verified JSON file of a bundle, parsed."""
    data = read_bundle_file(directory, name)
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{Storage(directory).where(name)}: not valid JSON ({e})") from None
