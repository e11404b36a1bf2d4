"""Read one input file into pandas, every row tagged with its file and line (pure, no Ray).

The ingest step makes one Ray task per file from ``list_files`` and calls ``read_file`` in it.
Each frame gets ``_source_file`` (the path as listed) and ``_source_row`` (int64, 1-based: the
physical line for csv (the header is line 1), jsonl and libsvm, the row index for parquet), so
that validation errors can say "file X, row N, column C". Files are read whole through
``pyarrow.fs``, so local paths, ``file://``, ``s3://`` and ``gs://`` URIs all work. Text formats
may be compressed (``.gz``, ``.bz2``, ``.zst``, ``.lz4``; detected from the name).

Values keep their natural types, except csv: every csv column is read as strings (null markers
become nulls) and the validator coerces them, reporting the row of each bad value.
Any file that cannot be listed, opened or parsed raises ``SourceError`` naming the file (and the
line where known); bad options raise ``ValueError``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

FORMATS = ("parquet", "csv", "jsonl", "libsvm")
SOURCE_FILE = "_source_file"
SOURCE_ROW = "_source_row"
EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".svm": "libsvm",
    ".libsvm": "libsvm",
}
COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")  # text formats only
MAX_JSON_DEPTH = 64  # nesting levels of one JSON line (deeper crashes Arrow's parser)
MAX_FEATURES = 1_000_000  # default cap on the width of a libsvm file's dense matrix
_WILDCARDS = "*?["
_CSV_CHUNK = 65536


class SourceError(Exception):
    """A file that cannot be listed, opened or parsed; the message names the file (and line where known)."""


@dataclass(frozen=True)
class ReadOptions:
    """How to parse one file; only the fields of ``format`` are used.

    csv: with ``header`` the first non-blank line names the columns (names are stripped);
    ``column_names`` is required without a header and, when given with a header, replaces the
    header's names (the header line is still skipped). ``skip_initial_space`` drops spaces
    after each delimiter (Python csv semantics); ``null_values`` are matched after that.
    A ``.tsv`` file still needs ``delimiter="\\t"``.
    libsvm: columns ``label``, ``qid`` (when the file has ``qid:`` tokens or a sidecar query
    file ``<file><query_file_suffix>``) and ``<feature_prefix>0 .. n-1``; ``num_features=None``
    infers n from the largest index. ``zero_based=False`` maps index 1 to the first column.
    ``max_features`` caps n (inferred or given): a stray index such as ``500000000:1`` is an
    error naming its line instead of a dense matrix of that width. An index given twice on one
    line is an error too.
    """

    format: str
    header: bool = True
    column_names: tuple[str, ...] | None = None
    delimiter: str = ","
    null_values: tuple[str, ...] = ("", "NA", "null", "?")
    skip_initial_space: bool = True
    num_features: int | None = None
    max_features: int = MAX_FEATURES
    zero_based: bool = True
    feature_prefix: str = "f"
    query_file_suffix: str | None = ".query"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}; choose one of {', '.join(FORMATS)}")
        if self.column_names is not None:
            names = tuple(self.column_names)  # lists arrive from JSON/YAML
            object.__setattr__(self, "column_names", names)
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"column_names repeats {dupes}")
            reserved = [n for n in names if n in (SOURCE_FILE, SOURCE_ROW)]
            if reserved:
                raise ValueError(f"column_names may not use the reserved names {reserved}")
        if not self.header and not self.column_names:
            raise ValueError("column_names is required when header is False")
        object.__setattr__(self, "null_values", tuple(self.null_values))
        if len(self.delimiter) != 1 or self.delimiter in '"\r\n':
            raise ValueError(
                f"delimiter must be one character other than a quote or newline, got {self.delimiter!r}"
            )
        if self.num_features is not None and self.num_features < 0:
            raise ValueError(f"num_features must be >= 0, got {self.num_features}")
        if isinstance(self.max_features, bool) or not isinstance(self.max_features, int):
            raise ValueError(f"max_features must be an integer, got {self.max_features!r}")
        if self.max_features < 1:
            raise ValueError(f"max_features must be >= 1, got {self.max_features}")
        if self.num_features is not None and self.num_features > self.max_features:
            raise ValueError(
                f"num_features={self.num_features} is above max_features={self.max_features}; "
                "raise max_features to read files that wide"
            )
        if self.query_file_suffix == "":
            raise ValueError(
                "query_file_suffix must be None or a non-empty suffix such as '.query'"
            )


# --------------------------------------------------------------------------------------------
# Listing


def detect_format(path: str) -> str:
    """The format implied by a file's extension (a text format may add .gz/.bz2/.zst/.lz4)."""
    name = posixpath.basename(urlsplit(path).path if "://" in path else path).lower()
    stem, ext = posixpath.splitext(name)
    compressed = ext in COMPRESSED
    if compressed:
        ext = posixpath.splitext(stem)[1]
    fmt = EXTENSIONS.get(ext)
    if fmt is None or (compressed and fmt == "parquet"):
        known = ", ".join(EXTENSIONS)
        raise SourceError(
            f"{path}: cannot tell the format from the file name; known extensions: {known} "
            f"(text formats may end in {', '.join(COMPRESSED)}); or set the format explicitly"
        )
    return fmt


@dataclass(frozen=True)
class Listing:
    """What ``list_inputs`` found: the files to read, and the files it passed over.

    ``skipped`` names each file of a directory or glob that is not read, as
    ``"<path relative to the directory> (<reason>)"``, sorted: names starting with ``_``
    (``_SUCCESS``) or inside such a folder (``_temporary/``), hidden names (``.x``), and, without
    a format, unknown extensions. A libsvm sidecar query file is read with its data file, so it
    is not listed.
    """

    files: list[tuple[str, str]]
    skipped: list[str] = field(default_factory=list)


def list_files(
    uri: str, format: str | None = None, *, query_file_suffix: str | None = ".query"
) -> list[tuple[str, str]]:
    """Input files as ``[(path, format)]``, sorted: a file, a directory (recursive), a glob or a URI.

    In directories and globs, hidden entries (``.x``, ``_SUCCESS``, ``_temporary/``), libsvm
    sidecar query files and, without ``format``, files of unknown extension are skipped (see
    ``list_inputs`` for the list of them). Local inputs come back as absolute paths, URIs as
    URIs of the same scheme.
    """
    return list_inputs(uri, format, query_file_suffix=query_file_suffix).files


def _skip_reason(rel: str) -> str | None:
    """Why a file of a directory listing is not read by name, or None when it is a candidate."""
    *folders, name = rel.split("/")
    for folder in folders:
        if folder.startswith(("_", ".")):
            return f"in the folder {folder}/, which starts with {folder[0]}"
    if name.startswith("_"):
        return "starts with _"
    if name.startswith("."):
        return "hidden"
    return None


def list_inputs(
    uri: str, format: str | None = None, *, query_file_suffix: str | None = ".query"
) -> Listing:
    """``list_files`` with the files it skipped (``Listing``), for the ingest report."""
    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    base, pattern, query = _split_glob(uri)
    fs, root = _resolve(base + query)
    make = _path_maker(base, query)
    info = _file_info(fs, root, uri)
    if pattern is None:
        if info.type == pafs.FileType.File:
            path = uri if "://" in uri else root
            return Listing([(path, format or detect_format(path))])
        if info.type != pafs.FileType.Directory:
            raise SourceError(f"{uri}: no such file or directory")
        rels = _walk(fs, root, uri, recursive=True)
    else:
        if info.type != pafs.FileType.Directory:
            raise SourceError(f"no input files match {uri} ({base or '.'} is not a directory)")
        parts = pattern.split("/")
        recursive = len(parts) > 1 or "**" in pattern
        rels = [r for r in _walk(fs, root, uri, recursive) if _glob_match(r.split("/"), parts)]
    skipped: dict[str, str] = {}
    visible: list[str] = []
    for r in rels:
        reason = _skip_reason(r)
        if reason is None:
            visible.append(r)
        else:
            skipped[r] = reason
    rels = visible
    if query_file_suffix:
        present = set(rels)
        rels = [
            r
            for r in rels
            if not (r.endswith(query_file_suffix) and r[: -len(query_file_suffix)] in present)
        ]
    out: list[tuple[str, str]] = []
    unknown: list[str] = []
    for rel in sorted(rels):
        path = make(_join(root, rel))
        if format is not None:
            out.append((path, format))
            continue
        try:
            out.append((path, detect_format(path)))
        except SourceError:
            unknown.append(rel)
            skipped[rel] = "unknown extension"
    if not out:
        hint = ""
        if unknown:
            hint = f" ({len(unknown)} file(s) of unknown extension skipped, e.g. {unknown[0]!r}; set the format)"
        raise SourceError(f"no input files match {uri}{hint}")
    return Listing(out, [f"{rel} ({skipped[rel]})" for rel in sorted(skipped)])


def _split_glob(uri: str) -> tuple[str, str | None, str]:
    """(base without wildcards, pattern relative to it or None, '?query' of a URI or '')."""
    query = ""
    if "://" in uri:
        parts = urlsplit(uri)
        if parts.query:
            query = "?" + parts.query
            uri = uri[: uri.index("?")]
    elif os.path.exists(os.path.expanduser(uri)):
        return uri, None, ""  # a local name that merely contains '[' or '?'
    comps = uri.split("/")
    for i, comp in enumerate(comps):
        if any(ch in comp for ch in _WILDCARDS):
            base = "/".join(comps[:i])
            if base == "" and uri.startswith("/"):
                base = "/"
            return base or ".", "/".join(comps[i:]), query
    return uri, None, query


def _glob_match(parts: list[str], pattern: list[str]) -> bool:
    """Match path components against pattern components; ``**`` spans zero or more of them."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_glob_match(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], pattern[0]) and _glob_match(parts[1:], pattern[1:])


def _walk(fs: pafs.FileSystem, root: str, uri: str, recursive: bool) -> list[str]:
    """Paths of the files under ``root``, relative to it."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=recursive))
    except Exception as e:
        raise SourceError(f"{uri}: cannot list: {_reason(e)}") from e
    prefix = root.rstrip("/") + "/"
    return [
        i.path[len(prefix) :]
        for i in infos
        if i.type == pafs.FileType.File and i.path.startswith(prefix)
    ]


def _join(root: str, rel: str) -> str:
    return root.rstrip("/") + "/" + rel


def _path_maker(base: str, query: str) -> Callable[[str], str]:
    """Turn a filesystem path back into what the caller passed: a local path or a URI."""
    if "://" not in base:
        return lambda p: p
    parts = urlsplit(base)
    if parts.scheme in ("s3", "gs", "gcs"):  # the filesystem path starts with the bucket
        return lambda p: f"{parts.scheme}://{p.lstrip('/')}{query}"
    return lambda p: f"{parts.scheme}://{parts.netloc}/{p.lstrip('/')}{query}"


def _resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and in-filesystem path for a local path or a URI."""
    if "://" not in path:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    try:
        fs, inner = pafs.FileSystem.from_uri(path)
    except Exception as e:
        raise SourceError(f"{path}: cannot open: {_reason(e)}") from e
    return fs, inner


def _file_info(fs: pafs.FileSystem, path: str, uri: str) -> pafs.FileInfo:
    try:
        return fs.get_file_info(path)
    except Exception as e:
        raise SourceError(f"{uri}: cannot open: {_reason(e)}") from e


def _reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text if len(text) <= 500 else text[:500] + " ..."


# --------------------------------------------------------------------------------------------
# Reading


def read_file(path: str, options: ReadOptions) -> pd.DataFrame:
    """The whole file as a frame plus ``_source_file`` and ``_source_row`` (see the module doc)."""
    fmt = options.format
    fs, inner = _resolve(path)
    try:
        if fmt == "parquet":
            frame = _read_parquet(fs, inner)
            rows = np.arange(1, len(frame) + 1, dtype=np.int64)
        else:
            data = _read_bytes(fs, inner)
            if fmt == "csv":
                frame, rows = _read_csv(path, data, options)
            elif fmt == "jsonl":
                frame, rows = _read_jsonl(path, data)
            else:
                frame, rows = _read_libsvm(path, data, options, fs, inner)
    except (SourceError, MemoryError):
        raise
    except Exception as e:
        raise SourceError(f"{path}: cannot read as {fmt}: {_reason(e)}") from e
    taken = [c for c in (SOURCE_FILE, SOURCE_ROW) if c in frame.columns]
    if taken:
        raise SourceError(f"{path}: the file has the reserved column(s) {taken}")
    frame[SOURCE_FILE] = path
    frame[SOURCE_ROW] = np.asarray(rows, dtype=np.int64)
    return frame


def _read_bytes(fs: pafs.FileSystem, inner: str) -> bytes:
    with fs.open_input_stream(inner, compression="detect") as f:
        return bytes(f.read())


def _read_parquet(fs: pafs.FileSystem, inner: str) -> pd.DataFrame:
    with fs.open_input_file(inner) as f:
        table = pq.ParquetFile(f).read()
    frame = table.to_pandas()
    # a stored index that carries data (named, or not 0..n-1) becomes columns again
    return frame.reset_index(drop=isinstance(frame.index, pd.RangeIndex))


def _decode(path: str, data: bytes, fmt: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise SourceError(
            f"{path}: cannot read as {fmt}: not UTF-8 text (line {line}, byte {e.start})"
        ) from None


def _nonblank_lines(data: bytes, blank: bytes) -> np.ndarray:
    """1-based numbers of the lines that hold more than the ``blank`` characters."""
    arr = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(arr == 10)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [len(arr)]))
    if starts[-1] == len(arr):  # nothing after the last newline
        starts, ends = starts[:-1], ends[:-1]
    maybe = (ends == starts) | np.isin(arr[starts], np.frombuffer(blank, dtype=np.uint8))
    is_blank = np.zeros(len(starts), dtype=bool)
    for i in np.flatnonzero(maybe):
        is_blank[i] = not data[starts[i] : ends[i]].strip(blank)
    return (np.flatnonzero(~is_blank) + 1).astype(np.int64)


# csv ----------------------------------------------------------------------------------------


def _read_csv(path: str, data: bytes, o: ReadOptions) -> tuple[pd.DataFrame, np.ndarray]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    parsed = _csv_fast(data, o) if b'"' not in data else None
    if parsed is None:
        parsed = _csv_python(path, data, o)
    cols, lines = parsed
    first_line = int(lines[0]) if len(lines) else 1
    if not cols or len(lines) == 0:
        if o.header:
            raise SourceError(f"{path}: cannot read as csv: the file is empty (no header line)")
        assert o.column_names is not None
        return pd.DataFrame({n: pd.Series([], dtype=object) for n in o.column_names}), lines
    if o.header:
        names = [str(c[0].as_py()).strip() or f"Unnamed: {i}" for i, c in enumerate(cols)]
        cols, lines = [c.slice(1) for c in cols], lines[1:]
    if o.column_names is not None:
        if len(o.column_names) != len(cols):
            raise SourceError(
                f"{path}, line {first_line}: {len(cols)} fields but {len(o.column_names)} column_names"
            )
        names = list(o.column_names)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SourceError(f"{path}, line {first_line}: the header repeats column(s) {dupes}")
    if o.null_values:
        nulls = pa.array(list(o.null_values), pa.string())
        none = pa.scalar(None, pa.string())
        cols = [pc.if_else(pc.is_in(c, value_set=nulls), none, c) for c in cols]
    frame = pa.table(cols, names=[f"c{i}" for i in range(len(cols))]).to_pandas()
    frame.columns = pd.Index(names)
    return frame, lines


def _csv_fast(data: bytes, o: ReadOptions) -> tuple[list[Any], np.ndarray] | None:
    """pyarrow parse of a file without quotes; None when it cannot vouch for the result."""
    lines = _nonblank_lines(data, b"\r")
    if len(lines) == 0:
        return None
    start = 0 if lines[0] == 1 else _nth_line_start(data, int(lines[0]))
    end = data.find(b"\n", start)
    try:
        first = data[start : end if end >= 0 else len(data)].decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        return None
    names = [f"c{i}" for i in range(len(first.split(o.delimiter)))]
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=names),
            parse_options=pacsv.ParseOptions(
                delimiter=o.delimiter, quote_char=False, ignore_empty_lines=True
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid:
        return None  # the Python parser names the line
    if table.num_rows != len(lines):
        return None
    cols = list(table.columns)
    if o.skip_initial_space:
        cols = [pc.utf8_ltrim(c, characters=" ") for c in cols]
    return cols, lines


def _nth_line_start(data: bytes, n: int) -> int:
    pos = 0
    for _ in range(n - 1):
        pos = data.index(b"\n", pos) + 1
    return pos


def _csv_python(path: str, data: bytes, o: ReadOptions) -> tuple[list[Any], np.ndarray]:
    """Python csv parse: handles quoted fields (also after skipped spaces) and names bad lines."""
    text = _decode(path, data, "csv")
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=o.delimiter,
        skipinitialspace=o.skip_initial_space,
        strict=True,
    )
    chunks: list[list[pa.Array]] = []
    rows: list[list[str]] = []
    lines: list[int] = []
    width = -1
    prev = 0

    def flush() -> None:
        for j, values in enumerate(zip(*rows, strict=True)):
            chunks[j].append(pa.array(values, pa.string()))
        rows.clear()

    try:
        for rec in reader:
            start, prev = prev + 1, reader.line_num
            if not rec:
                continue
            if width < 0:
                width = len(rec)
                chunks = [[] for _ in range(width)]
            elif len(rec) != width:
                raise SourceError(
                    f"{path}, line {start}: expected {width} fields (as on line {lines[0]}), got {len(rec)}"
                )
            rows.append(rec)
            lines.append(start)
            if len(rows) >= _CSV_CHUNK:
                flush()
    except csv.Error as e:
        raise SourceError(f"{path}, line {reader.line_num}: cannot read as csv: {e}") from None
    flush()
    cols = [pa.chunked_array(c, pa.string()) for c in chunks]
    return cols, np.asarray(lines, dtype=np.int64)


# jsonl --------------------------------------------------------------------------------------


def _check_utf8(path: str, data: bytes, fmt: str) -> None:
    """Raise SourceError naming the line and byte of the first invalid UTF-8 sequence.

    Arrow validates without copying; only a file that fails is decoded (to find the place).
    """
    whole = pa.LargeStringArray.from_buffers(
        1, pa.py_buffer(np.array([0, len(data)], dtype=np.int64)), pa.py_buffer(data)
    )
    try:
        whole.validate(full=True)
    except pa.ArrowInvalid:
        _decode(path, data, fmt)  # raises with the line and byte
        raise SourceError(f"{path}: cannot read as {fmt}: not UTF-8 text") from None


_JSON_SPECIAL = np.zeros(256, dtype=bool)  # what the exact depth scan looks at
_JSON_SPECIAL[[ord(c) for c in '"[]{}\\\n']] = True
_JSON_OPEN = np.zeros(256, dtype=bool)
_JSON_OPEN[[ord("["), ord("{")]] = True
_JSON_CHUNK = 1 << 23  # bytes checked at a time by the depth check


def _check_json_depth(path: str, data: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Raise SourceError for a line whose objects/arrays nest deeper than ``limit``.

    Arrow's JSON parser recurses per level and crashes the process (SIGSEGV) on lines nested
    a few thousand deep, so the depth is measured first, per line (a JSON line holds no raw
    newline). A line with at most ``limit`` opening brackets cannot be too deep, so a chunk
    whose lines all have that few is passed; the others are scanned exactly (brackets outside
    strings). Chunk by chunk (a few numpy passes each), so memory stays bounded.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return
    start, line0 = 0, 0  # byte and 0-based line where the chunk starts
    while start < len(data):
        end = data.find(b"\n", min(start + _JSON_CHUNK, len(data)) - 1)
        end = len(data) if end < 0 else end + 1
        chunk = data[start:end]
        arr = np.frombuffer(chunk, dtype=np.uint8)
        newlines = np.flatnonzero(arr == 10)
        opens = np.flatnonzero(_JSON_OPEN[arr])
        if len(opens) > limit and np.bincount(np.searchsorted(newlines, opens)).max() > limit:
            _scan_json_depth(path, chunk, start, line0, limit)
        line0 += len(newlines)
        start = end


def _scan_json_depth(path: str, chunk: bytes, start: int, line0: int, limit: int) -> None:
    """The exact scan of whole lines (``chunk`` starts at byte ``start``, 0-based line ``line0``)."""
    arr = np.frombuffer(chunk, dtype=np.uint8)
    pos = np.flatnonzero(_JSON_SPECIAL[arr])
    code = arr[pos]
    quote = code == ord('"')
    # A quote right after an odd run of backslashes is escaped (part of a string).
    idx = np.arange(len(pos))
    bs = code == 0x5C
    follows = np.zeros(len(pos), dtype=bool)  # the byte before is the previous position
    follows[1:] = pos[1:] == pos[:-1] + 1
    run_start = np.maximum.accumulate(np.where(bs & ~(follows & np.roll(bs, 1)), idx, 0))
    after_bs = np.zeros(len(pos), dtype=bool)
    after_bs[1:] = bs[:-1] & follows[1:]
    esc = np.flatnonzero(quote & after_bs)
    quote[esc[(esc - run_start[esc - 1]) % 2 == 1]] = False
    # strings and depth start afresh on every line (even after a malformed one)
    newline = code == 10
    line = np.cumsum(newline) - newline  # the line (within the chunk) of each position
    ends = np.flatnonzero(newline)  # the newline that ends each line
    q = np.cumsum(quote)
    in_string = (q - np.concatenate(([0], q[ends]))[line]) % 2 == 1
    opens = ((code == ord("[")) | (code == ord("{"))) & ~in_string
    closes = ((code == ord("]")) | (code == ord("}"))) & ~in_string
    depth = np.cumsum(opens.astype(np.int64) - closes)
    over = np.flatnonzero(depth - np.concatenate(([0], depth[ends]))[line] > limit)
    if len(over):
        i = int(over[0])
        raise SourceError(
            f"{path}, line {line0 + int(line[i]) + 1}: JSON nested more than {limit} levels deep "
            f"(at byte {start + int(pos[i])})"
        )


def _read_jsonl(path: str, data: bytes) -> tuple[pd.DataFrame, np.ndarray]:
    lines = _nonblank_lines(data, b" \t\r")
    if len(lines) == 0:
        return pd.DataFrame(), lines
    _check_utf8(path, data, "jsonl")  # Arrow would name neither the file nor the line
    _check_json_depth(path, data)  # before Arrow, which crashes on deep nesting
    try:
        table = pajson.read_json(io.BytesIO(data))
        if table.num_rows == len(lines):
            return table.to_pandas(), lines
    except pa.ArrowInvalid:
        pass  # mixed types or a bad line: the Python parser keeps objects and names the line
    records: list[dict[str, Any]] = []
    text = _decode(path, data, "jsonl")
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise SourceError(
                f"{path}, line {n}: cannot parse JSON: {e.msg} (column {e.colno})"
            ) from None
        if not isinstance(rec, dict):
            raise SourceError(f"{path}, line {n}: expected a JSON object, got {type(rec).__name__}")
        records.append(rec)
    return pd.DataFrame.from_records(records), lines


# libsvm -------------------------------------------------------------------------------------


def _first_bad_cast(values: Any, typ: pa.DataType) -> int:
    """Index of the first value that does not cast to ``typ`` (binary search over slices)."""
    lo, hi = 0, len(values)  # invariant: values[lo:hi] holds a bad value
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pc.cast(values.slice(lo, mid - lo), typ)
            lo = mid
        except pa.ArrowInvalid:
            hi = mid
    return lo


def _blank_comments(data: bytes) -> np.ndarray:
    """The bytes with every ``# comment`` (up to the end of its line) turned into spaces."""
    buf = np.frombuffer(data, dtype=np.uint8).copy()
    hashes = np.flatnonzero(buf == ord("#"))
    newlines = np.flatnonzero(buf == ord("\n"))
    line, first = np.unique(np.searchsorted(newlines, hashes), return_index=True)
    mark = np.zeros(len(buf) + 1, dtype=np.int8)
    mark[hashes[first]] = 1
    mark[np.append(newlines, len(buf))[line]] = -1
    buf[np.cumsum(mark[:-1], dtype=np.int8) > 0] = ord(" ")
    return buf


def _read_libsvm(
    path: str, data: bytes, o: ReadOptions, fs: pafs.FileSystem, inner: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """Vectorised: arrow splits lines and tokens, numpy checks the colons, one cast parses all numbers."""
    raw = _blank_comments(data) if b"#" in data else data
    whole = pa.LargeStringArray.from_buffers(
        1, pa.py_buffer(np.array([0, len(data)], dtype=np.int64)), pa.py_buffer(raw)
    )
    lines = pc.ascii_trim_whitespace(pc.split_pattern(whole, "\n").flatten())
    keep = pc.binary_length(lines).to_numpy() > 0
    line_no = (np.flatnonzero(keep) + 1).astype(np.int64)
    if not keep.all():
        lines = lines.filter(pa.array(keep))
    n = len(lines)
    if n == 0:
        empty = np.zeros((0, o.num_features or 0))
        return _libsvm_frame(path, o, fs, inner, np.zeros(0), None, empty), line_no
    toks = pc.ascii_split_whitespace(lines)
    row_off = toks.offsets.to_numpy().astype(np.int64)
    flat = toks.flatten()
    ntok = len(flat)
    tok_off = np.frombuffer(flat.buffers()[1], dtype=np.int64)[flat.offset : flat.offset + ntok + 1]
    tdata = np.frombuffer(flat.buffers()[2], dtype=np.uint8)
    s, e = tok_off[:-1], tok_off[1:]
    first = row_off[:-1] - row_off[0]  # the label token of each row
    is_feat = np.ones(ntok, dtype=bool)
    is_feat[first] = False
    feat = np.flatnonzero(is_feat)
    lo, hi = int(tok_off[0]), int(tok_off[-1])
    colons = np.flatnonzero(tdata[lo:hi] == ord(":")) + lo

    def bad(k: int, what: str) -> SourceError:
        row = int(np.searchsorted(first, k, side="right")) - 1
        token = bytes(tdata[s[k] : e[k]]).decode("utf-8", "replace")
        return SourceError(f"{path}, line {line_no[row]}: cannot parse {token!r} ({what})")

    # each feature token holds exactly one colon with text on both sides; labels hold none
    if len(colons) != len(feat) or not (np.all(colons > s[feat]) and np.all(colons < e[feat] - 1)):
        i0 = np.searchsorted(colons, s)
        count = np.searchsorted(colons, e) - i0
        at = colons[np.minimum(i0, len(colons) - 1)] if len(colons) else s
        wrong = np.where(is_feat, (count != 1) | (at <= s) | (at >= e - 1), count > 0)
        k = int(np.argmax(wrong))
        raise bad(k, "index:value expected" if is_feat[k] else "the label must be a number")

    # Two string slots per token over the token bytes without colons, cast in one go:
    # label -> (label, null), feature -> (index, value), qid:Q -> (null, Q).
    body = tdata[lo:hi]
    compact = body[body != ord(":")]
    removed = np.cumsum(is_feat) - is_feat  # colons removed before each token
    mid = e - lo - removed
    mid[feat] = colons - lo - removed[feat]
    offsets = np.empty(2 * ntok + 1, dtype=np.int64)
    offsets[0:-1:2], offsets[1::2], offsets[-1] = s - lo - removed, mid, len(compact)
    is_qid = np.zeros(len(feat), dtype=bool)
    maybe = np.flatnonzero(colons - s[feat] == 3)
    maybe = maybe[tdata[s[feat[maybe]]] == ord("q")]
    at = s[feat[maybe]]
    is_qid[maybe[(tdata[at + 1] == ord("i")) & (tdata[at + 2] == ord("d"))]] = True
    valid = np.ones(2 * ntok, dtype=bool)
    valid[2 * first + 1] = False
    valid[2 * feat[is_qid]] = False
    slots = pa.LargeStringArray.from_buffers(
        2 * ntok,
        pa.py_buffer(offsets),
        pa.py_buffer(compact),
        pa.py_buffer(np.packbits(valid, bitorder="little")),
    )
    try:
        values = pc.cast(slots, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        i = _first_bad_cast(slots, pa.float64())
        k = i // 2
        if not is_feat[k]:
            raise bad(k, "the label must be a number") from None
        if np.any(feat[is_qid] == k):
            raise bad(k, "qid:<integer> expected") from None
        raise bad(
            k, "the value must be a number" if i % 2 else "the index must be an integer"
        ) from None
    pairs = values.reshape(-1, 2)
    label = pairs[first, 0]
    idx = pairs[feat, 0]
    wrong = ~(np.isfinite(idx) & (idx == np.round(idx)) & (np.abs(idx) < 2**53)) & ~is_qid
    if wrong.any():
        raise bad(int(feat[np.argmax(wrong)]), "the index must be an integer")
    per_row = np.zeros(n, dtype=np.int64)

    qid: np.ndarray | None = None
    if is_qid.any():
        qk = feat[is_qid]
        qv = pairs[qk, 1]
        wrong = ~(np.isfinite(qv) & (qv == np.round(qv)))
        if wrong.any():
            raise bad(int(qk[np.argmax(wrong)]), "qid:<integer> expected")
        qrows = np.searchsorted(first, qk, side="right") - 1
        per_row = np.bincount(qrows, minlength=n)
        if (per_row != 1).any():
            r = int(np.argmax(per_row != 1))
            what = (
                "more than one qid: token"
                if per_row[r] > 1
                else "no qid: token, while other lines have one"
            )
            raise SourceError(f"{path}, line {line_no[r]}: {what}")
        qid = np.empty(n, dtype=np.int64)
        qid[qrows] = qv.astype(np.int64)
        keep_feat = ~is_qid
        feat, idx = feat[keep_feat], idx[keep_feat]
    row_of = np.repeat(np.arange(n, dtype=np.int64), np.diff(row_off) - 1 - per_row)
    base = 0 if o.zero_based else 1
    col = idx.astype(np.int64) - base
    if len(col) and col.min() < 0:
        i = int(np.argmax(col < 0))
        raise SourceError(
            f"{path}, line {line_no[row_of[i]]}: feature index {col[i] + base} is below {base} "
            f"(zero_based={o.zero_based})"
        )
    if o.num_features is None and len(col) and col.max() >= o.max_features:
        i = int(np.argmax(col >= o.max_features))
        raise SourceError(
            f"{path}, line {line_no[row_of[i]]}: feature index {col[i] + base} is above "
            f"max_features={o.max_features} (zero_based={o.zero_based}): a typo, or set "
            f"libsvm.max_features (each row is read as {o.max_features:,} dense columns at most)"
        )
    nf = o.num_features if o.num_features is not None else (int(col.max()) + 1 if len(col) else 0)
    if len(col) and col.max() >= nf:
        i = int(np.argmax(col >= nf))
        raise SourceError(
            f"{path}, line {line_no[row_of[i]]}: feature index {col[i] + base} is out of range for "
            f"num_features={nf} (zero_based={o.zero_based})"
        )
    _check_repeated_index(path, row_of, col, nf, line_no, base)
    try:
        matrix = np.zeros((n, nf), dtype=np.float64)
    except MemoryError:
        raise SourceError(
            f"{path}: {n:,} rows x {nf:,} features as a dense float64 matrix need "
            f"{n * nf * 8 / 2**30:,.1f} GiB, more than this worker has"
        ) from None
    matrix[row_of, col] = pairs[feat, 1]

    return _libsvm_frame(path, o, fs, inner, label, qid, matrix), line_no


def _check_repeated_index(
    path: str, row_of: np.ndarray, col: np.ndarray, nf: int, line_no: np.ndarray, base: int
) -> None:
    """Raise SourceError naming the first feature index given twice on one line (the dense
    matrix would keep only the last value)."""
    if len(col) < 2:
        return
    same_row = row_of[1:] == row_of[:-1]
    if not (same_row & (col[1:] <= col[:-1])).any():
        return  # every line lists its indices in increasing order
    key = row_of * nf + col
    order = np.argsort(key, kind="stable")
    repeat = order[1:][key[order][1:] == key[order][:-1]]
    if len(repeat):
        i = int(repeat.min())  # the first token, in file order, that repeats an earlier one
        raise SourceError(
            f"{path}, line {line_no[row_of[i]]}: feature index {col[i] + base} is given more "
            "than once"
        )


def _libsvm_frame(
    path: str,
    o: ReadOptions,
    fs: pafs.FileSystem,
    inner: str,
    label: np.ndarray,
    qid: np.ndarray | None,
    matrix: np.ndarray,
) -> pd.DataFrame:
    """label, qid (from the tokens or the sidecar query file) and the feature columns."""
    n, nf = matrix.shape
    if o.query_file_suffix:
        sizes = _query_sizes(path, o.query_file_suffix, fs, inner, has_qid=qid is not None)
        if sizes is not None:
            if int(sizes.sum()) != n:
                raise SourceError(
                    f"{_sidecar_name(path, o.query_file_suffix)}: query sizes sum to "
                    f"{int(sizes.sum())} but {path} has {n} rows"
                )
            qid = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    frame = pd.DataFrame(matrix, columns=[f"{o.feature_prefix}{j}" for j in range(nf)], copy=False)
    if qid is not None:
        frame.insert(0, "qid", qid)
    frame.insert(0, "label", label)
    return frame


def _sidecar_name(path: str, suffix: str) -> str:
    if "://" in path and "?" in path:
        head, query = path.split("?", 1)
        return f"{head}{suffix}?{query}"
    return path + suffix


def _query_sizes(
    path: str, suffix: str, fs: pafs.FileSystem, inner: str, has_qid: bool
) -> np.ndarray | None:
    """Group sizes from a LightGBM-style sidecar query file, or None without one."""
    qpath = _sidecar_name(path, suffix)
    if fs.get_file_info(inner + suffix).type != pafs.FileType.File:
        return None
    if has_qid:
        raise SourceError(
            f"{path} has qid: tokens and a query file {qpath}; remove one, or set query_file_suffix to None"
        )
    try:
        text = _read_bytes(fs, inner + suffix).decode("utf-8")
    except Exception as e:
        raise SourceError(f"{qpath}: cannot read the query file: {_reason(e)}") from e
    sizes: list[int] = []
    for n, line in enumerate(text.split("\n"), start=1):
        s = line.strip()
        if not s:
            continue
        try:
            size = int(s)
        except ValueError:
            size = -1
        if size < 0:
            raise SourceError(
                f"{qpath}, line {n}: cannot parse {s!r} as a query size (a count of rows)"
            )
        sizes.append(size)
    return np.asarray(sizes, dtype=np.int64)
