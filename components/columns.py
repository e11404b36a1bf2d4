"""The columns a data source has, in order, read without reading its rows where the format
allows (pure, no Ray): what feature selectors (``features.numeric: {prefix: f}``) resolve
against when a run starts, and what ``rayline validate --data`` checks.

- a generator (``synthetic:<kind>``): the columns of a one-row block, in the generated order;
- parquet: the file's schema (no rows are read);
- csv: ``column_names``, else the header line;
- jsonl and libsvm: the columns the ingest reader gives for the file (jsonl: the keys of every
  line; libsvm: ``label``, ``qid`` and ``<prefix>0..n-1``), so the file is read once.

A source of several files gives the columns of its first file (in listing order); ingest
checks every file for the columns the resolved spec names.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Mapping
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from components import generators, readers, uris

_HEADER_CHUNK = 1 << 16  # bytes read at a time while looking for a csv header line


def reader_options(path: str, fmt: str, read_options: Mapping[str, Any]) -> readers.ReadOptions:
    """The reader's options for one file: a csv delimiter left unset is a tab for ``.tsv``
    files (compressed or not) and a comma otherwise."""
    opts = dict(read_options)
    if opts.get("delimiter") is None:
        opts["delimiter"] = "\t" if path.lower().removesuffix(".gz").endswith(".tsv") else ","
    return readers.ReadOptions(format=fmt, **opts)


def source_columns(
    uri: str,
    fmt: str | None = None,
    params: Mapping[str, Any] | None = None,
    read_options: Mapping[str, Any] | None = None,
) -> tuple[str, list[str]]:
    """(the file or block the columns were read from, its columns in order)."""
    opts = dict(read_options or {})
    if uri.startswith("synthetic:"):
        kind = uri.split(":", 1)[1]
        first = generators.plan_blocks(kind, params or {})[0]
        frame = generators.generate_block(dataclasses.replace(first, rows=1))
        return f"{uri}#block0", [str(c) for c in frame.columns]
    suffix = opts.get("query_file_suffix", ".query")
    path, file_fmt = readers.list_inputs(uri, fmt, query_file_suffix=suffix).files[0]
    return path, file_columns(path, reader_options(path, file_fmt, opts))


def file_columns(path: str, options: readers.ReadOptions) -> list[str]:
    """One file's columns in order, as ``readers.read_file`` would give them (without the
    ``_source_*`` columns); ``SourceError`` naming the file when it cannot be read."""
    try:
        if options.format == "parquet":
            return _parquet_columns(path)
        if options.format == "csv":
            return (
                list(options.column_names) if options.column_names else _csv_header(path, options)
            )
    except readers.SourceError:
        raise
    except Exception as e:
        raise readers.SourceError(
            f"{path}: cannot read the columns as {options.format}: {e}"
        ) from e
    frame = readers.read_file(path, options)
    return [str(c) for c in frame.columns if c not in (readers.SOURCE_FILE, readers.SOURCE_ROW)]


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    return uris.filesystem(path)


def _parquet_columns(path: str) -> list[str]:
    fs, inner = _filesystem(path)
    with fs.open_input_file(inner) as f:
        schema = pq.ParquetFile(f).schema_arrow
    # pandas' unnamed stored index is not a column of the frame the reader gives
    return [n for n in schema.names if not n.startswith("__index_level_")]


def _csv_header(path: str, o: readers.ReadOptions) -> list[str]:
    """The first non-blank line, parsed like the reader parses a header (names stripped)."""
    fs, inner = _filesystem(path)
    data = b""
    with fs.open_input_stream(inner, compression="detect") as f:
        while True:
            chunk = f.read(_HEADER_CHUNK)
            data += chunk
            text = data.removeprefix(b"\xef\xbb\xbf").lstrip(b"\r\n")
            if not chunk or b"\n" in text:
                break
    line = text.split(b"\n", 1)[0].rstrip(b"\r")
    if not line.strip():
        raise readers.SourceError(f"{path}: cannot read as csv: the file is empty (no header line)")
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise readers.SourceError(
            f"{path}: cannot read as csv: not UTF-8 text (line 1, byte {e.start})"
        ) from None
    fields = next(
        csv.reader(
            io.StringIO(decoded), delimiter=o.delimiter, skipinitialspace=o.skip_initial_space
        )
    )
    return [name.strip() or f"Unnamed: {i}" for i, name in enumerate(fields)]
