"""Batch inference: read any supported input with Ray Data, score it with a bundle, write Parquet.

The output folder is replaced as a whole, so what may be replaced is checked first
(``check_output``): only rayline's own earlier output (a folder holding the ``MARKER`` file that
every output gets) or an empty folder, anything else only with ``overwrite``, and never a path
that holds the input, lies inside it, or holds the current folder, the home folder or the storage.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from components import uris
from components.bundle import Storage
from components.predictor import Predictor
from components.validation import SOURCE_FILE, SOURCE_ROW

MARKER = "_RAYLINE_PREDICTIONS"  # in every output folder; "_" keeps Parquet readers off it
_WILDCARDS = "*?["


class PredictOutputError(ValueError):
    """OUTPUT may not be written (it would delete or mix with something else)."""


def _local(uri: str) -> str | None:
    """The local path of a path or file:// URI; None for other URIs."""
    if uri.startswith("file://"):
        return uri[len("file://") :]
    return None if "://" in uri else uri


def _input_root(input_uri: str) -> tuple[Path, list[str] | None] | None:
    """The local file or folder the input is read from, resolved, and for a glob the pattern
    below it (the folder before the first wildcard, then the rest); None for a remote URI."""
    path = _local(input_uri)
    if path is None:
        return None
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        parts = path.split("/")
        for i, part in enumerate(parts):
            if any(ch in part for ch in _WILDCARDS):
                base = "/".join(parts[:i]) or ("/" if path.startswith("/") else ".")
                return Path(base).resolve(), [p for p in parts[i:] if p]
    return Path(path).resolve(), None


def _may_match_below(rel: Sequence[str], pattern: Sequence[str]) -> bool:
    """Some path under the folder ``rel`` could match the glob ``pattern`` (``**`` spans
    folders), so files written there could be read as input."""
    if not pattern:
        return False
    if not rel:
        return True
    if pattern[0] == "**":
        return _may_match_below(rel, pattern[1:]) or _may_match_below(rel[1:], pattern)
    return fnmatchcase(rel[0], pattern[0]) and _may_match_below(rel[1:], pattern[1:])


def _within(path: Path, other: Path) -> bool:
    """``path`` is ``other`` or lies inside it."""
    return path == other or other in path.parents


def is_previous_output(path: str | Path) -> bool:
    """A folder rayline's ``predict`` wrote: it holds the marker file (a regular file)."""
    marker = Path(path) / MARKER
    return Path(path).is_dir() and not Path(path).is_symlink() and marker.is_file()


def check_output(
    input_uri: str,
    output: str,
    overwrite: bool = False,
    protect: Sequence[str] = (),
) -> None:
    """Raise ``PredictOutputError`` unless ``output`` may be (re)placed by predictions of
    ``input_uri``.

    Always refused: a remote OUTPUT (only local folders are written); OUTPUT equal to the input,
    holding it (replacing OUTPUT would delete it) or inside it (the predictions would be read as
    input next time); OUTPUT equal to or holding the current folder, the home folder, the
    filesystem root or a ``protect`` path (the storage root, the bundle). Symbolic links are
    followed for these checks. Without ``overwrite``, an existing OUTPUT must be a folder of
    rayline's own earlier predictions (with the marker) or an empty folder.
    """
    if not output:
        raise PredictOutputError("OUTPUT is empty: name a folder or a storage URI")
    local = _local(output)
    if local is None:
        _check_remote_output(input_uri, output, overwrite, protect)
        return
    given = Path(os.path.expanduser(local))
    targets = {Path(os.path.abspath(given)), given.resolve()}  # the name, and a link's target
    found = _input_root(input_uri)
    for target in targets:
        if found is not None:
            source, pattern = found
            if _within(source, target):
                what = "is the input" if target == source else "holds the input"
                raise PredictOutputError(
                    f"OUTPUT {output} {what} ({input_uri}): writing it would delete the input; "
                    "choose another folder"
                )
            inside = _within(target, source) and (
                pattern is None or _may_match_below(target.relative_to(source).parts, pattern)
            )
            if inside:
                raise PredictOutputError(
                    f"OUTPUT {output} is inside the input {input_uri}: the predictions would be "
                    "read as input next time; choose a folder outside it"
                )
        guarded = [Path.cwd(), Path.home(), Path("/")] + [Path(p) for p in protect if p]
        for keep in guarded:
            for form in {Path(os.path.abspath(keep)), keep.resolve()}:
                if _within(form, target):
                    raise PredictOutputError(
                        f"OUTPUT {output} is or holds {form}: replacing it would delete that; "
                        "choose a new folder"
                    )
    if not (given.exists() or given.is_symlink()):
        return
    if is_previous_output(given):
        return
    if given.is_dir() and not given.is_symlink() and not any(given.iterdir()):
        return  # an empty folder: nothing is lost
    if not overwrite:
        kind = "link" if given.is_symlink() else "folder" if given.is_dir() else "file"
        raise PredictOutputError(
            f"OUTPUT {output} exists and is not an earlier rayline output (a {kind} without "
            f"{MARKER}): pass --overwrite to replace it, or choose a new folder"
        )


def _prefix_of(a: str, b: str) -> bool:
    """Whether URI ``a`` is ``b`` or a folder above it (compared without query options)."""
    a, b = uris.display(a).rstrip("/"), uris.display(b).rstrip("/")
    return b == a or b.startswith(a + "/")


def _check_remote_output(
    input_uri: str, output: str, overwrite: bool, protect: Sequence[str]
) -> None:
    """``check_output`` for an object-store OUTPUT: the same rules, by URI prefix."""
    if _prefix_of(output, input_uri):
        raise PredictOutputError(
            f"OUTPUT {uris.display(output)} is or holds the input ({uris.display(input_uri)}): "
            "writing it would delete the input; choose another prefix"
        )
    if _prefix_of(input_uri, output):
        raise PredictOutputError(
            f"OUTPUT {uris.display(output)} is inside the input {uris.display(input_uri)}: the "
            "predictions would be read as input next time; choose a prefix outside it"
        )
    for keep in protect:
        if keep and uris.is_uri(keep) and _prefix_of(output, keep):
            raise PredictOutputError(
                f"OUTPUT {uris.display(output)} is or holds {uris.display(keep)}: replacing it "
                "would delete that; choose a new prefix"
            )
    store = Storage(uris.normalize(output))
    if overwrite or not store.exists() or store.is_file(MARKER) or not store.list_dir():
        if store.is_file(""):
            raise PredictOutputError(f"OUTPUT {uris.display(output)} is a file, not a prefix")
        return
    raise PredictOutputError(
        f"OUTPUT {uris.display(output)} exists and is not an earlier rayline output (no "
        f"{MARKER}): pass --overwrite to replace it, or choose a new prefix"
    )


def _write_remote(scored: Any, output: str, marker: dict[str, Any], expected_rows: int) -> int:
    """Write the predictions under an object-store OUTPUT: into a temporary prefix beside it,
    counted, then copied over OUTPUT's old files with the marker written last (an object store
    has no rename; the marker says the folder is complete). Returns the rows written."""
    import ray.data

    output = uris.normalize(output)
    parent, name = Storage(uris.parent(output)), uris.basename(output)
    tmp_name = f".{name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp = parent.child(tmp_name)
    fs, tmp_inner = uris.filesystem(tmp.location)
    try:
        scored.write_parquet(tmp_inner, filesystem=fs)
        rows = ray.data.read_parquet(tmp_inner, filesystem=fs).count()
        if rows != expected_rows:
            raise RuntimeError(f"scored {rows} rows but read {expected_rows}; nothing was written")
        out = parent.child(name)
        out.delete_file(MARKER)  # from here on OUTPUT is not a complete output
        for old in out.walk_files():
            out.delete_file(old)
        for f in tmp.walk_files():
            fs.copy_file(tmp.path(f), out.path(f))
        out.write_text(MARKER, json.dumps({**marker, "rows": rows}, indent=1) + "\n")
    finally:
        parent.remove(tmp_name)
    return rows


def _replace(tmp: str, output: str) -> None:
    """Put the finished folder ``tmp`` at ``output``; what was there is removed only after.
    A link at ``output`` is replaced, never what it points to."""
    old = None
    if os.path.islink(output) or os.path.isfile(output):
        os.remove(output)
    elif os.path.isdir(output):
        parent = os.path.dirname(os.path.abspath(output))
        old = os.path.join(parent, f".{os.path.basename(output)}.old-{uuid.uuid4().hex[:8]}")
        os.replace(output, old)
    os.replace(tmp, output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _marker(input_uri: str, bundle_path: str, rows: int) -> dict[str, Any]:
    """What the MARKER file of an output says."""
    return {
        "written_by": "rayline predict",
        "bundle": uris.display(
            bundle_path if uris.is_uri(bundle_path) else os.path.abspath(bundle_path)
        ),
        "input": uris.display(input_uri),
        "rows": rows,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def publish(
    tmp: str,
    output: str,
    input_uri: str,
    bundle_path: str,
    rows: int,
    overwrite: bool = False,
    protect: Sequence[str] = (),
) -> None:
    """Mark the finished folder ``tmp`` as rayline's predictions and put it at ``output``,
    checking again first that ``output`` may be replaced (it may have changed while scoring);
    on a refusal ``tmp`` is removed and nothing else is touched."""
    marker = _marker(input_uri, bundle_path, rows)
    Path(tmp, MARKER).write_text(json.dumps(marker, indent=1) + "\n")
    try:
        check_output(input_uri, output, overwrite, [bundle_path, *protect])
    except PredictOutputError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _replace(tmp, output)


def predict(
    bundle_path: str,
    input_uri: str,
    output: str,
    fmt: str | None = None,
    keys: Sequence[str] = (),
    concurrency: int = 2,
    batch_size: int = 4096,
    overwrite: bool = False,
    protect: Sequence[str] = (),
) -> dict[str, Any]:
    """Score every input row; the output has the scores, ``keys`` and the source file and row.

    Input rows are checked like training data (missing feature columns or values of the wrong
    type fail with the file, row and column). Rows in = rows out; the output is keyed by
    (``_source_file``, ``_source_row``) so order never matters. Written aside, then renamed;
    ``check_output`` (with ``overwrite`` and ``protect``) decides, before scoring and again
    before the rename, whether an existing OUTPUT may be replaced.
    """
    from components.steps.ingest import SourceConfig, ingest
    from components.steps.score import score_dataset

    check_output(input_uri, output, overwrite, [bundle_path, *protect])
    started = time.time()
    predictor = Predictor.load(bundle_path)
    schema = predictor.schema.unlabeled(keys=tuple(keys))
    source = uris.normalize(input_uri) if input_uri.startswith("s3://") else input_uri
    with tempfile.TemporaryDirectory(prefix="rayline-predict-") as scratch:
        data = ingest(SourceConfig(uri=source, format=fmt), schema, {}, scratch, label="input")
    keep = [*keys, SOURCE_FILE, SOURCE_ROW]
    scored = score_dataset(
        data.dataset, bundle_path, keep, actors=concurrency, batch_size=batch_size
    )
    if _local(output) is None:
        marker = _marker(input_uri, bundle_path, data.rows_read)
        check_output(input_uri, output, overwrite, [bundle_path, *protect])
        rows_out = _write_remote(scored, output, marker, data.rows_read)
        return {"rows_in": data.rows_read, "rows_out": rows_out, "seconds": time.time() - started}
    parent = os.path.dirname(os.path.abspath(output)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(output)}.tmp-{uuid.uuid4().hex[:8]}")
    import ray.data

    try:
        scored.write_parquet(tmp)
        rows_out = ray.data.read_parquet(tmp).count()
        if rows_out != data.rows_read:
            raise RuntimeError(
                f"scored {rows_out} rows but read {data.rows_read}; nothing was written"
            )
        publish(tmp, output, input_uri, bundle_path, rows_out, overwrite, protect)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed or interrupted write leaves nothing
        raise
    return {"rows_in": data.rows_read, "rows_out": rows_out, "seconds": time.time() - started}
