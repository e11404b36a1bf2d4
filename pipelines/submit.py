"""``rayline submit``: run a spec as a Ray job on a running cluster, follow it, return its status.

The same as ``ray job submit --working-dir . -- rayline run SPEC ...``, with the excludes that
keep the upload small (Ray caps it at 100 MiB) and secrets off the cluster, a line saying what is
uploaded, and the exit code of the job.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

# Never uploaded, gitignore-style patterns relative to the working directory (Ray's `excludes`):
# a pattern without "/" matches a name at any depth, one with "/" is anchored at the top, "**"
# spans folders, and an excluded folder takes everything in it.
SECRET_EXCLUDES = [
    ".env*",  # .env, .env.local, .envrc
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "id_rsa*",  # ssh keys under their ssh-keygen names (a bare id_* would drop code like id_map.py)
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    ".ssh",
    ".netrc",
    "secrets",
    "*.db",  # mlflow.db and other local databases
    "*.sqlite",
    "*.sqlite3",
]
# ... nor history, environments, local outputs, data files, caches.
EXCLUDES = [
    ".git",
    ".venv",
    "venv",
    "storage",
    "mlruns",
    "mlartifacts",
    "benchmarks/results",
    "**/__pycache__",
    "**/.pytest_cache",
    "**/.mypy_cache",
    "**/.ruff_cache",
    "*.parquet",
    "*.csv",
    "*.csv.gz",
    "*.tsv",
    "*.libsvm",
    "*.npy",
    "data",
    *SECRET_EXCLUDES,
]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# What Ray itself adds (ray._private.ray_constants; the same environment variables switch them).
RAY_DEFAULT_EXCLUDES = ".git,.venv,venv,__pycache__"
UPLOAD_LIMIT = 100 * 1024 * 1024


def entrypoint(spec_path: str, overrides: Sequence[str], working_dir: str) -> str:
    """``rayline run SPEC overrides...`` with the spec relative to the uploaded folder."""
    spec = Path(spec_path).resolve()
    root = Path(working_dir).resolve()
    try:
        rel = spec.relative_to(root)
    except ValueError:
        raise ValueError(
            f"the spec {spec_path} is outside the working directory {working_dir}: only that "
            "folder is uploaded with the job"
        ) from None
    return shlex.join(["rayline", "run", str(rel), *overrides])


def _escape(name: str) -> str:
    """A literal name as a gitignore pattern segment: glob characters backslash-escaped."""
    return re.sub(r"([*?\[\\])", r"\\\1", name)


def _literal(char: str) -> str:
    """One character as an fnmatch pattern that matches only it."""
    return f"[{char}]" if char in "*?[" else char


def excludes_for(working_dir: str, storages: Iterable[str | None] = ()) -> list[str]:
    """EXCLUDES, plus each local storage folder (a path, not a URI; a relative one taken from
    the current folder and from ``working_dir``) inside ``working_dir``, anchored at the top
    (``/runs/out``). A storage folder that is the working directory itself is refused: the upload
    would be the storage."""
    root = Path(working_dir).resolve()
    out = list(EXCLUDES)
    for storage in storages:
        if not storage or "://" in storage:
            continue
        given = Path(os.path.expanduser(storage))
        # a relative storage is relative to where rayline runs: here, and in the job's folder
        for path in dict.fromkeys([given.resolve(), (root / given).resolve()]):
            if path == root:
                raise ValueError(
                    f"the storage folder {storage} is the working directory {working_dir}: "
                    "submit from a folder that does not hold the storage (--working-dir)"
                )
            if root in path.parents:
                pattern = "/" + "/".join(_escape(part) for part in path.relative_to(root).parts)
                if pattern not in out:
                    out.append(pattern)
    return out


def runtime_env(
    working_dir: str, storage: str | None, excludes: Sequence[str] | None = None
) -> dict[str, Any]:
    env: dict[str, Any] = {
        "working_dir": working_dir,
        "excludes": list(EXCLUDES if excludes is None else excludes),
    }
    if storage:
        env["env_vars"] = {"RAYLINE_STORAGE": storage}
    return env


@dataclass(frozen=True)
class _Pattern:
    """One gitignore-style line: the path segments to match, and how."""

    segments: tuple[str, ...]
    negate: bool
    dir_only: bool  # "name/": what is inside a folder of that name, not a file of that name

    @classmethod
    def parse(cls, line: str) -> _Pattern | None:
        line = line.rstrip("\r\n")
        while line.endswith(" ") and not line.endswith("\\ "):
            line = line[:-1]
        if not line or line.startswith("#"):
            return None
        negate = line.startswith("!")
        if negate or line.startswith(("\\!", "\\#")):
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            return None
        anchored = "/" in line  # a slash at the start or in the middle anchors at the top
        segments = [_segment(s) for s in line.strip("/").split("/") if s]
        if not anchored and segments != ["**"]:
            segments = ["**", *segments]
        if len(segments) > 1 and segments[-1] == "**":  # "dir/**": everything inside dir
            segments, dir_only = segments[:-1], True
        return cls(tuple(segments), negate, dir_only)

    def matches(self, parts: Sequence[str]) -> bool:
        """``parts`` (a relative path's names) or one of its folders matches."""
        last = len(parts) - 1 if self.dir_only else len(parts)
        return any(_match(parts[:n], self.segments) for n in range(1, last + 1))


def _segment(text: str) -> str:
    """A pattern segment for fnmatchcase: a backslash-escaped character becomes literal."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(_literal(text[i + 1]))
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _match(parts: Sequence[str], segments: Sequence[str]) -> bool:
    if not segments:
        return not parts
    if segments[0] == "**":
        return any(_match(parts[i:], segments[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], segments[0]) and _match(parts[1:], segments[1:])


def _spec(lines: Iterable[str]) -> list[_Pattern]:
    return [p for p in (_Pattern.parse(line) for line in lines) if p is not None]


def _excluded(spec: Sequence[_Pattern], parts: Sequence[str]) -> bool:
    """The last pattern that matches decides (a "!" pattern brings a path back)."""
    result = False
    for pattern in spec:
        if pattern.matches(parts):
            result = not pattern.negate
    return result


@dataclass
class Upload:
    """What ``ray job submit`` packs from a working directory: files (relative, with their sizes)
    and the paths left out (a folder stands for everything in it)."""

    root: Path
    files: list[tuple[str, int]] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)

    def summary(self) -> str:
        """One line: the count, the size, and what was left out, by top-level entry."""
        tops: dict[str, int] = {}
        for path in self.excluded:
            top, sep, _ = path.partition("/")
            key = top + ("/" if sep else "")
            tops[key] = tops.get(key, 0) + 1
        names = [f"{t} ({n} entries)" if n > 1 else t for t, n in tops.items()]
        line = f"uploading {len(self.files)} files ({_size(self.total_bytes)}) from {self.root}"
        if names:
            line += "; left out: " + ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
        return line


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def upload_listing(
    working_dir: str,
    excludes: Sequence[str] = EXCLUDES,
    *,
    include_gitignore: bool | None = None,
    ray_defaults: Sequence[str] | None = None,
) -> Upload:
    """The files Ray uploads for ``working_dir`` with these ``excludes``, found the way Ray's
    packaging walks it: Ray's default excludes (``RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES``)
    and ``excludes`` relative to the top, each folder's ``.gitignore`` (unless
    ``RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1``) and ``.rayignore`` relative to that folder; a path
    any of them excludes is skipped with everything under it. Symbolic links are followed, as Ray
    does (Ray zips what they point to)."""
    root = Path(working_dir).absolute()
    if not root.is_dir():
        raise ValueError(f"the working directory {working_dir} is not a directory")
    if include_gitignore is None:
        include_gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"
    if ray_defaults is None:
        value = os.environ.get("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", RAY_DEFAULT_EXCLUDES)
        ray_defaults = [x.strip() for x in value.split(",") if x.strip()]
    upload = Upload(root)
    seen: set[Path] = set()

    def walk(path: Path, specs: list[tuple[Path, list[_Pattern]]]) -> None:
        if path.is_dir():
            names = [".gitignore", ".rayignore"] if include_gitignore else [".rayignore"]
            for name in names:
                if (path / name).is_file():
                    lines = (path / name).read_text(errors="replace").splitlines()
                    specs = [*specs, (path, _spec(lines))]
        rel = path.relative_to(root)
        for base, spec in specs:
            parts = path.relative_to(base).parts or (".",)
            if _excluded(spec, parts):
                upload.excluded.append(rel.as_posix() + ("/" if path.is_dir() else ""))
                return
        if path.is_file():
            upload.files.append((rel.as_posix(), path.stat().st_size))
        elif path.is_dir():
            real = path.resolve()
            if real in seen:  # a link back up the tree: Ray would loop; list it once
                return
            seen.add(real)
            for sub in sorted(path.iterdir()):
                walk(sub, specs)

    walk(root, [(root, _spec([*ray_defaults, *excludes]))])
    return upload


def submit(
    address: str,
    spec_path: str,
    overrides: Sequence[str],
    working_dir: str = ".",
    storage: str | None = None,
    follow: bool = True,
    out: Callable[[str], None] = print,
    local_storage: Iterable[str | None] = (),
) -> tuple[str, str]:
    """Submit the job; with ``follow``, stream its logs until it ends. (job id, final status).

    ``local_storage``: storage folders configured on this machine (the spec's, RAYLINE_STORAGE,
    ``storage``); those inside the working directory are not uploaded. Prints what is uploaded
    before submitting; refuses an upload over Ray's 100 MiB limit, naming the largest files."""
    from ray.job_submission import JobSubmissionClient

    command = entrypoint(spec_path, overrides, working_dir)
    excludes = excludes_for(working_dir, [storage, *local_storage])
    upload = upload_listing(working_dir, excludes)
    out(upload.summary())
    if upload.total_bytes > UPLOAD_LIMIT:
        largest = sorted(upload.files, key=lambda f: -f[1])[:5]
        raise ValueError(
            f"the upload is {_size(upload.total_bytes)}, over Ray's {_size(UPLOAD_LIMIT)} limit; "
            "the largest files: "
            + ", ".join(f"{name} ({_size(size)})" for name, size in largest)
            + " (list what to leave out in .rayignore)"
        )
    client = JobSubmissionClient(address)
    job_id = client.submit_job(
        entrypoint=command,
        runtime_env=runtime_env(os.path.abspath(working_dir), storage, excludes),
        metadata={"rayline.spec": str(spec_path)},
    )
    out(f"submitted job {job_id} to {address}")
    if not follow:
        return job_id, str(client.get_job_status(job_id))

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            out(lines.rstrip("\n"))

    asyncio.run(tail())
    status = client.get_job_status(job_id)
    while str(status).split(".")[-1] not in TERMINAL:  # logs can end a moment before the status
        time.sleep(0.5)
        status = client.get_job_status(job_id)
    return job_id, str(status).split(".")[-1]
