"""Read one input file into pandas, every row tagged with its file and line (pure, no Ray).

The ingest step makes one Ray task per file from ``list_files`` and calls ``read_file`` in it.
Each frame gets ``_source_file`` (the path as listed) and ``_source_row`` (int64, 1-based: the
physical line for csv (the header is line 1), jsonl and libsvm, the row index for parquet), so
that validation errors can say "file X, row N, column C". Files are read whole through
``pyarrow.fs``, so local paths, ``file://``, ``s3://`` and ``gs://`` URIs all work. Text formats
may be compressed (``.gz``, ``.bz2``, ``.zst``, ``.lz4``; detected from the name).

libsvm with ``sparse`` set, and libfm (``label field:index:value ...``), are read chunk by chunk
(``SVM_CHUNK`` bytes of lines at a time) straight into a sparse column (components.sparse) or
one categorical column per libFM field: no dense matrix is ever built.

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
from collections.abc import Callable, Iterator
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

from components import sparse, uris

FORMATS = ("parquet", "csv", "jsonl", "libsvm", "libfm")
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
    ".libfm": "libfm",
    ".ffm": "libfm",
}
COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")  # text formats only
MAX_JSON_DEPTH = 64  # nesting levels of one JSON line (deeper crashes Arrow's parser)
MAX_FEATURES = 1_000_000  # default cap on the width of a libsvm file's dense matrix
MAX_FIELDS = 10_000  # cap on the libFM fields inferred from a file (each becomes a column)
SVM_CHUNK = 1 << 24  # bytes of lines parsed at a time by the sparse/libfm reader
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
    libsvm with ``sparse="x"``: columns ``label``, ``qid`` (as above) and ``x``, a sparse column
    (``components.sparse.SPARSE_TYPE``) of each line's ``index:value`` pairs, in index order;
    ``max_features`` does not apply (no dense matrix), ``num_features`` still bounds indices.
    libfm: each token is ``field:index:value`` (fields from 0). With ``sparse`` every token goes
    into that sparse column (the fields are checked, then dropped); without it each field
    becomes a categorical column ``<feature_prefix><field>`` holding the token's index (as
    written), null where a line has no token of that field: each line may hold at most one token
    per field, with the value 1 (one-hot). ``num_fields`` fixes the fields (0..n-1; otherwise the
    file's largest field + 1, at most ``MAX_FIELDS``).
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
    sparse: str | None = None
    num_fields: int | None = None

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
        if self.sparse is not None and (
            not self.sparse or self.sparse in ("label", "qid", SOURCE_FILE, SOURCE_ROW)
        ):
            raise ValueError(
                f"sparse must name a column other than label, qid and {SOURCE_FILE}/{SOURCE_ROW}, "
                f"got {self.sparse!r}"
            )
        if self.num_fields is not None and self.num_fields < 1:
            raise ValueError(f"num_fields must be >= 1, got {self.num_fields}")
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
        fs, inner = uris.filesystem(path)
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
        elif fmt == "libfm" or (fmt == "libsvm" and options.sparse):
            frame, rows = _read_svm_stream(path, options, fs, inner)  # chunk by chunk
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


@dataclass
class _Svm:
    """One parsed chunk of a libsvm/libfm file: per row, and per feature token in file order."""

    line_no: np.ndarray  # int64, the 1-based line of each row
    label: np.ndarray  # float64
    qid: np.ndarray | None  # int64, when the lines have qid: tokens
    row_of: np.ndarray  # int64, the row (in this chunk) of each feature token
    index: np.ndarray  # int64, as written (before zero_based)
    value: np.ndarray  # float64
    field: np.ndarray | None  # int64, libfm only


def _parse_svm(path: str, data: bytes, line0: int, libfm: bool) -> _Svm:
    """Vectorised: arrow splits lines and tokens, numpy checks the colons, one cast parses all
    numbers. ``data`` holds whole lines; ``line0`` lines of the file come before it."""
    k = 3 if libfm else 2  # the pieces of a feature token: [field:]index:value
    expected = "field:index:value expected" if libfm else "index:value expected"
    raw = _blank_comments(data) if b"#" in data else data
    whole = pa.LargeStringArray.from_buffers(
        1, pa.py_buffer(np.array([0, len(data)], dtype=np.int64)), pa.py_buffer(raw)
    )
    lines = pc.ascii_trim_whitespace(pc.split_pattern(whole, "\n").flatten())
    keep = pc.binary_length(lines).to_numpy() > 0
    line_no = (np.flatnonzero(keep) + 1 + line0).astype(np.int64)
    if not keep.all():
        lines = lines.filter(pa.array(keep))
    n = len(lines)
    if n == 0:
        none = np.zeros(0, dtype=np.int64)
        return _Svm(line_no, np.zeros(0), None, none, none, np.zeros(0), none if libfm else None)
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
    lo, hi = int(tok_off[0]), int(tok_off[-1])
    colons = np.flatnonzero(tdata[lo:hi] == ord(":")) + lo
    before = np.searchsorted(colons, s)  # colons before each token
    count = np.searchsorted(colons, e) - before

    def bad(t: int, what: str) -> SourceError:
        row = int(np.searchsorted(first, t, side="right")) - 1
        token = bytes(tdata[s[t] : e[t]]).decode("utf-8", "replace")
        return SourceError(f"{path}, line {line_no[row]}: cannot parse {token!r} ({what})")

    is_qid = np.zeros(ntok, dtype=bool)
    maybe = np.flatnonzero(is_feat & (e - s >= 4))
    at = s[maybe]
    is_qid[
        maybe[
            (tdata[at] == ord("q"))
            & (tdata[at + 1] == ord("i"))
            & (tdata[at + 2] == ord("d"))
            & (tdata[at + 3] == ord(":"))
        ]
    ] = True
    # labels hold no colon, qid:Q one, features k-1, each with text on both sides
    wrong = count != np.where(is_qid, 1, np.where(is_feat, k - 1, 0))
    if len(colons):
        tok = np.searchsorted(s, colons, side="right") - 1
        edge = (colons == s[tok]) | (colons == e[tok] - 1)
        edge[1:] |= colons[1:] == colons[:-1] + 1
        wrong[tok[edge]] = True
    if wrong.any():
        t = int(np.argmax(wrong))
        raise bad(t, expected if is_feat[t] else "the label must be a number")

    # k string slots per token over the token bytes without colons, cast in one go:
    # label -> (label, null..), feature -> ([field,] index, value), qid:Q -> (null.., Q).
    body = tdata[lo:hi]
    compact = body[body != ord(":")]
    start = s - lo - before
    bounds = np.empty((ntok, k), dtype=np.int64)  # where each slot starts
    bounds[:, 0] = start
    bounds[:, 1:] = (e - lo - before - count)[:, None]  # labels: all in slot 0
    feat_all = np.flatnonzero(is_feat & ~is_qid)
    for j in range(1, k):
        c = before[feat_all] + j - 1  # the j-th colon of each feature token
        bounds[feat_all, j] = colons[c] - lo - c
    qk = np.flatnonzero(is_qid)
    bounds[qk, 1:] = (colons[before[qk]] - lo - before[qk])[:, None]
    offsets = np.append(bounds.ravel(), len(compact))
    valid = np.zeros((ntok, k), dtype=bool)
    valid[first, 0] = True
    valid[feat_all] = True
    valid[qk, k - 1] = True
    slots = pa.LargeStringArray.from_buffers(
        k * ntok,
        pa.py_buffer(offsets),
        pa.py_buffer(compact),
        pa.py_buffer(np.packbits(valid.ravel(), bitorder="little")),
    )
    try:
        values = pc.cast(slots, pa.float64()).to_numpy(zero_copy_only=False).reshape(ntok, k)
    except pa.ArrowInvalid:
        i = _first_bad_cast(slots, pa.float64())
        t, j = divmod(i, k)
        if not is_feat[t]:
            raise bad(t, "the label must be a number") from None
        if is_qid[t]:
            raise bad(t, "qid:<integer> expected") from None
        names = {k - 1: "the value must be a number", k - 2: "the index must be an integer"}
        raise bad(t, names.get(j, "the field must be an integer")) from None
    label = values[first, 0]

    def integers(col: int, what: str, tokens: np.ndarray) -> np.ndarray:
        v = values[tokens, col]
        wrong = ~(np.isfinite(v) & (v == np.round(v)) & (np.abs(v) < 2**53))
        if wrong.any():
            raise bad(int(tokens[np.argmax(wrong)]), what)
        return v.astype(np.int64)

    index = integers(k - 2, "the index must be an integer", feat_all)
    field = None
    if libfm:
        field = integers(0, "the field must be an integer", feat_all)
        if len(field) and field.min() < 0:
            raise bad(int(feat_all[np.argmax(field < 0)]), "the field must be 0 or more")
    per_row = np.zeros(n, dtype=np.int64)
    qid: np.ndarray | None = None
    if len(qk):
        qv = integers(k - 1, "qid:<integer> expected", qk)
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
        qid[qrows] = qv
    row_of = np.repeat(np.arange(n, dtype=np.int64), np.diff(row_off) - 1 - per_row)
    return _Svm(line_no, label, qid, row_of, index, values[feat_all, k - 1], field)


def _feature_columns(path: str, p: _Svm, o: ReadOptions) -> np.ndarray:
    """0-based column of each feature token, checked against zero_based and num_features."""
    base = 0 if o.zero_based else 1
    col = p.index - base
    if len(col) and col.min() < 0:
        i = int(np.argmax(col < 0))
        raise SourceError(
            f"{path}, line {p.line_no[p.row_of[i]]}: feature index {col[i] + base} is below "
            f"{base} (zero_based={o.zero_based})"
        )
    if o.num_features is not None and len(col) and col.max() >= o.num_features:
        i = int(np.argmax(col >= o.num_features))
        raise SourceError(
            f"{path}, line {p.line_no[p.row_of[i]]}: feature index {col[i] + base} is out of "
            f"range for num_features={o.num_features} (zero_based={o.zero_based})"
        )
    return col


def _read_libsvm(
    path: str, data: bytes, o: ReadOptions, fs: pafs.FileSystem, inner: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """The dense form: one float64 column per feature index (absent entries are 0)."""
    p = _parse_svm(path, data, 0, libfm=False)
    n, line_no, row_of = len(p.line_no), p.line_no, p.row_of
    if n == 0:
        empty = np.zeros((0, o.num_features or 0))
        return _libsvm_frame(path, o, fs, inner, np.zeros(0), None, empty), line_no
    base = 0 if o.zero_based else 1
    col = _feature_columns(path, p, o)
    if o.num_features is None and len(col) and col.max() >= o.max_features:
        i = int(np.argmax(col >= o.max_features))
        raise SourceError(
            f"{path}, line {line_no[row_of[i]]}: feature index {col[i] + base} is above "
            f"max_features={o.max_features} (zero_based={o.zero_based}): a typo, or set "
            f"libsvm.max_features (each row is read as {o.max_features:,} dense columns at most)"
        )
    nf = o.num_features if o.num_features is not None else (int(col.max()) + 1 if len(col) else 0)
    _check_repeated_index(path, row_of, col, nf, line_no, base)
    try:
        matrix = np.zeros((n, nf), dtype=np.float64)
    except MemoryError:
        raise SourceError(
            f"{path}: {n:,} rows x {nf:,} features as a dense float64 matrix need "
            f"{n * nf * 8 / 2**30:,.1f} GiB, more than this worker has"
        ) from None
    matrix[row_of, col] = p.value
    return _libsvm_frame(path, o, fs, inner, p.label, p.qid, matrix), line_no


def _line_chunks(fs: pafs.FileSystem, inner: str, size: int) -> Iterator[tuple[bytes, int]]:
    """The file's bytes as ``(whole lines, lines before them)``, about ``size`` bytes at a time."""
    line0, rest = 0, b""
    with fs.open_input_stream(inner, compression="detect") as f:
        while True:
            block = bytes(f.read(size))
            if not block:
                if rest:
                    yield rest, line0
                return
            data = rest + block
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # a line longer than the chunk: read on
                rest = data
                continue
            yield data[:cut], line0
            line0 += data.count(b"\n", 0, cut)
            rest = data[cut:]


@dataclass
class _SvmPart:
    """What a parsed chunk keeps: per row, plus its sparse column or its libfm fields."""

    line_no: np.ndarray
    label: np.ndarray
    qid: np.ndarray | None
    column: pa.Array | None = None  # the sparse column (with ``sparse``)
    field_rows: np.ndarray | None = None  # libfm fields: row (in the chunk), field, index
    fields: np.ndarray | None = None
    field_index: np.ndarray | None = None


def _sparse_part(path: str, p: _Svm, o: ReadOptions) -> _SvmPart:
    """A chunk's feature tokens as a sparse column (entries sorted by index in each row)."""
    col = _feature_columns(path, p, o)
    base = 0 if o.zero_based else 1
    if len(col) and col.max() > sparse.MAX_INDEX:
        i = int(np.argmax(col > sparse.MAX_INDEX))
        raise SourceError(
            f"{path}, line {p.line_no[p.row_of[i]]}: feature index {col[i] + base} is above "
            f"{sparse.MAX_INDEX}, the largest index of a sparse column"
        )
    row_of, value = p.row_of, p.value
    unsorted = (row_of[1:] == row_of[:-1]) & (col[1:] <= col[:-1])
    if unsorted.any():
        _check_repeated_index(path, row_of, col, int(col.max()) + 1, p.line_no, base)
        order = np.lexsort((col, row_of))
        row_of, col, value = row_of[order], col[order], value[order]
    n = len(p.line_no)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of, minlength=n), out=indptr[1:])
    return _SvmPart(p.line_no, p.label, p.qid, sparse.from_csr_arrays(indptr, col, value))


def _field_part(path: str, p: _Svm, o: ReadOptions) -> _SvmPart:
    """A libfm chunk's tokens as (row, field, index): at most one per field and line, value 1."""
    assert p.field is not None
    line = p.line_no[p.row_of]
    if o.num_fields is not None and len(p.field) and p.field.max() >= o.num_fields:
        i = int(np.argmax(p.field >= o.num_fields))
        raise SourceError(
            f"{path}, line {line[i]}: field {p.field[i]} is out of range for "
            f"num_fields={o.num_fields}"
        )
    if o.num_fields is None and len(p.field) and p.field.max() >= MAX_FIELDS:
        i = int(np.argmax(p.field >= MAX_FIELDS))
        raise SourceError(
            f"{path}, line {line[i]}: field {p.field[i]} is above {MAX_FIELDS:,} fields (each "
            "becomes a column): a typo, or set libsvm.num_fields"
        )
    not_one = p.value != 1
    if not_one.any():
        i = int(np.argmax(not_one))
        raise SourceError(
            f"{path}, line {line[i]}: field {p.field[i]}, index {p.index[i]} has the value "
            f"{p.value[i]:g}; fields are read as categorical (one index per field with the "
            "value 1): set libsvm.sparse to read the tokens into a sparse column instead"
        )
    if len(p.field) > 1:
        key = p.row_of * (int(p.field.max()) + 1) + p.field
        order = np.argsort(key, kind="stable")
        repeat = order[1:][key[order][1:] == key[order][:-1]]
        if len(repeat):
            i = int(repeat.min())
            raise SourceError(
                f"{path}, line {line[i]}: field {p.field[i]} has more than one index; fields "
                "are read as categorical (one index per field): set libsvm.sparse to read the "
                "tokens into a sparse column instead"
            )
    return _SvmPart(p.line_no, p.label, p.qid, None, p.row_of, p.field, p.index)


def _read_svm_stream(
    path: str, o: ReadOptions, fs: pafs.FileSystem, inner: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """libsvm with ``sparse``, and libfm: parsed ``SVM_CHUNK`` bytes at a time, each chunk kept
    only as its compact result (a sparse column, or (row, field, index) triples)."""
    libfm = o.format == "libfm"
    parts: list[_SvmPart] = []
    for data, line0 in _line_chunks(fs, inner, SVM_CHUNK):
        p = _parse_svm(path, data, line0, libfm)
        if not len(p.line_no):
            continue
        parts.append(_sparse_part(path, p, o) if o.sparse else _field_part(path, p, o))
    with_qid = [q.qid is not None for q in parts]
    if any(with_qid) and not all(with_qid):  # each chunk checked its own lines already
        r = parts[with_qid.index(False) if with_qid[0] else with_qid.index(True)]
        raise SourceError(
            f"{path}, line {r.line_no[0]}: "
            + (
                "no qid: token, while other lines have one"
                if with_qid[0]
                else "a qid: token, while earlier lines have none"
            )
        )
    line_no = np.concatenate([q.line_no for q in parts]) if parts else np.zeros(0, np.int64)
    label = np.concatenate([q.label for q in parts]) if parts else np.zeros(0)
    qid = (
        np.concatenate([q.qid for q in parts if q.qid is not None])
        if all(with_qid) and parts
        else None
    )
    n = len(line_no)
    columns: dict[str, Any] = {}
    if o.sparse:
        chunks = [q.column for q in parts if q.column is not None]
        columns[o.sparse] = sparse.series(pa.chunked_array(chunks, sparse.SPARSE_TYPE))
    else:
        top = max(
            (int(q.fields.max()) for q in parts if q.fields is not None and len(q.fields)),
            default=-1,
        )
        width = o.num_fields if o.num_fields is not None else top + 1
        codes = np.zeros((n, width), dtype=np.int64)
        present = np.zeros((n, width), dtype=bool)
        start = 0
        for q in parts:
            assert q.field_rows is not None and q.fields is not None and q.field_index is not None
            rows = q.field_rows + start
            codes[rows, q.fields] = q.field_index
            present[rows, q.fields] = True
            start += len(q.line_no)
        for f in range(width):
            columns[f"{o.feature_prefix}{f}"] = pd.arrays.IntegerArray(codes[:, f], ~present[:, f])
    qid = _sidecar_qid(path, o, fs, inner, n, qid)
    frame = pd.DataFrame(columns, index=pd.RangeIndex(n))
    if qid is not None:
        frame.insert(0, "qid", qid)
    frame.insert(0, "label", label)
    return frame, line_no


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


def _sidecar_qid(
    path: str, o: ReadOptions, fs: pafs.FileSystem, inner: str, n: int, qid: np.ndarray | None
) -> np.ndarray | None:
    """The query ids: from the tokens, or from the sidecar query file when there is one."""
    if o.query_file_suffix:
        sizes = _query_sizes(path, o.query_file_suffix, fs, inner, has_qid=qid is not None)
        if sizes is not None:
            if int(sizes.sum()) != n:
                raise SourceError(
                    f"{_sidecar_name(path, o.query_file_suffix)}: query sizes sum to "
                    f"{int(sizes.sum())} but {path} has {n} rows"
                )
            qid = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    return qid


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
    qid = _sidecar_qid(path, o, fs, inner, n, qid)
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
