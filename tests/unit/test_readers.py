"""Readers: every format round-trips with the right file and line per row; bad inputs are named."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components import readers
from components.readers import (
    FORMATS,
    Listing,
    ReadOptions,
    SourceError,
    detect_format,
    list_files,
    list_inputs,
    read_file,
)

CSV = ReadOptions(format="csv")
JSONL = ReadOptions(format="jsonl")
PARQUET = ReadOptions(format="parquet")
LIBSVM = ReadOptions(format="libsvm")


def write(path: Path, text: str | bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_bytes(text.encode())
    return str(path)


def data(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["_source_file", "_source_row"])


def rows(frame: pd.DataFrame) -> list[int]:
    assert frame["_source_row"].dtype == np.int64
    return frame["_source_row"].tolist()


# --- round trips -----------------------------------------------------------------------------


def test_parquet_round_trip_keeps_types(tmp_path: Path) -> None:
    want = pd.DataFrame({"x": [1.5, 2.5, np.nan], "n": [1, 2, 3], "c": ["a", None, "c"]})
    path = str(tmp_path / "d.parquet")
    want.to_parquet(path)
    got = read_file(path, PARQUET)
    pd.testing.assert_frame_equal(data(got), want)
    assert rows(got) == [1, 2, 3]
    assert set(got["_source_file"]) == {path}


def test_parquet_stored_index_becomes_a_column(tmp_path: Path) -> None:
    path = str(tmp_path / "d.parquet")
    pd.DataFrame({"x": [1, 2]}, index=pd.Index([7, 9], name="key")).to_parquet(path)
    got = read_file(path, PARQUET)
    assert list(got.columns[:2]) == ["key", "x"] and got["key"].tolist() == [7, 9]


def test_csv_with_header_reads_strings_and_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,b,c\n1,x,2.5\n\n3,y,\n")
    got = read_file(path, CSV)
    assert list(data(got).columns) == ["a", "b", "c"]
    assert got["a"].tolist() == ["1", "3"] and got["b"].tolist() == ["x", "y"]
    assert got["c"].iloc[0] == "2.5" and pd.isna(got["c"].iloc[1])
    assert rows(got) == [2, 4]  # the header is line 1; the blank line 3 keeps its number


def test_csv_without_header_needs_names(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "1,2\n3,4\n")
    got = read_file(path, ReadOptions(format="csv", header=False, column_names=("p", "q")))
    assert data(got).to_dict("list") == {"p": ["1", "3"], "q": ["2", "4"]}
    assert rows(got) == [1, 2]
    with pytest.raises(ValueError, match="column_names is required"):
        ReadOptions(format="csv", header=False)


def test_csv_names_replace_the_header(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,b\n1,2\n")
    got = read_file(path, ReadOptions(format="csv", column_names=("x", "y")))
    assert data(got).to_dict("list") == {"x": ["1"], "y": ["2"]} and rows(got) == [2]
    with pytest.raises(SourceError, match=r"d\.csv, line 1: 2 fields but 3 column_names"):
        read_file(path, ReadOptions(format="csv", column_names=("x", "y", "z")))


def test_csv_custom_delimiter_and_null_markers(tmp_path: Path) -> None:
    path = write(tmp_path / "d.tsv", "a\tb\n1\t-\n-\tNA\n")
    got = read_file(path, ReadOptions(format="csv", delimiter="\t", null_values=("-",)))
    assert got["a"].tolist()[0] == "1" and pd.isna(got["a"].iloc[1])
    assert pd.isna(got["b"].iloc[0]) and got["b"].iloc[1] == "NA"  # NA is not a marker here


def test_csv_crlf_spaces_and_trailing_dots_like_uci_adult(tmp_path: Path) -> None:
    text = "39, State-gov, 77516, >50K.\r\n50, ?, 83311, <=50K\r\n\r\n38, Private, 215646, >50K\r\n"
    path = write(tmp_path / "adult.data", text)
    opts = ReadOptions(
        format="csv", header=False, column_names=("age", "workclass", "fnlwgt", "label")
    )
    got = read_file(path, opts)
    assert got["age"].tolist() == ["39", "50", "38"]
    assert got["workclass"].iloc[0] == "State-gov" and pd.isna(got["workclass"].iloc[1])
    assert got["label"].tolist() == [">50K.", "<=50K", ">50K"]
    assert rows(got) == [1, 2, 4]


def test_csv_quoted_fields_use_the_exact_parser(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", 'id,text\n1, "a, b"\n2,"two\nlines"\n3,""\n')
    got = read_file(path, CSV)
    assert got["text"].tolist()[:2] == ["a, b", "two\nlines"] and pd.isna(got["text"].iloc[2])
    assert rows(got) == [2, 3, 5]


def test_csv_without_skipping_spaces_keeps_them(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a, b\n1, 2\n")
    got = read_file(path, ReadOptions(format="csv", skip_initial_space=False))
    assert list(data(got).columns) == ["a", "b"] and got["b"].tolist() == [" 2"]


def test_csv_fast_and_exact_parsers_agree(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = ["k,v,w"] + [
        f"{i}, {rng.choice(['x', 'NA', '', 'y z'])},{rng.random():.3f}" for i in range(500)
    ]
    plain = "\r\n".join(lines) + "\r\n"
    fast = read_file(write(tmp_path / "plain.csv", plain), CSV)
    # a quote anywhere sends the file to the Python parser; the quoted field reads the same
    exact = read_file(write(tmp_path / "quoted.csv", plain.replace("k,v,w", 'k,v,"w"')), CSV)
    pd.testing.assert_frame_equal(data(fast), data(exact))
    assert rows(fast) == rows(exact) == list(range(2, 502))


def test_gzip_csv(tmp_path: Path) -> None:
    path = tmp_path / "d.csv.gz"
    path.write_bytes(gzip.compress(b"a,b\n1,2\n"))
    assert detect_format(str(path)) == "csv"
    assert read_file(str(path), CSV)["b"].tolist() == ["2"]


def test_jsonl_round_trip(tmp_path: Path) -> None:
    text = '{"a": 1, "b": "x"}\n\n{"a": 2, "b": null}\r\n  \n{"a": 3, "b": "z"}\n'
    got = read_file(write(tmp_path / "d.jsonl", text), JSONL)
    assert got["a"].tolist() == [1, 2, 3]
    assert got["b"].tolist()[0] == "x" and pd.isna(got["b"].iloc[1])
    assert rows(got) == [1, 3, 5]


def test_jsonl_mixed_types_still_read(tmp_path: Path) -> None:
    got = read_file(write(tmp_path / "d.jsonl", '{"a": 1}\n{"a": "two"}\n'), JSONL)
    assert got["a"].tolist() == [1, "two"] and rows(got) == [1, 2]


def test_libsvm_with_qid_comments_and_blank_lines(tmp_path: Path) -> None:
    text = "# header comment\n2 qid:7 0:1.5 3:-2e-1 # note\n\n0 qid:7 1:0.7\n1 qid:9 2:3\n"
    got = read_file(write(tmp_path / "r.svm", text), LIBSVM)
    assert list(data(got).columns) == ["label", "qid", "f0", "f1", "f2", "f3"]
    assert got["label"].dtype == np.float64 and got["qid"].dtype == np.int64
    assert got["label"].tolist() == [2.0, 0.0, 1.0] and got["qid"].tolist() == [7, 7, 9]
    np.testing.assert_array_equal(
        got[["f0", "f1", "f2", "f3"]].to_numpy(), [[1.5, 0, 0, -0.2], [0, 0.7, 0, 0], [0, 0, 3, 0]]
    )
    assert rows(got) == [2, 4, 5]


def test_libsvm_one_based_fixed_width_prefix(tmp_path: Path) -> None:
    path = write(tmp_path / "r.libsvm", "1 1:0.5 3:1\r\n0 2:2\r\n")
    got = read_file(
        path, ReadOptions(format="libsvm", zero_based=False, num_features=5, feature_prefix="x")
    )
    assert list(data(got).columns) == ["label", "x0", "x1", "x2", "x3", "x4"]
    assert (
        got["x0"].tolist() == [0.5, 0.0]
        and got["x2"].tolist() == [1.0, 0.0]
        and got["x1"].tolist() == [0, 2]
    )
    with pytest.raises(SourceError, match=r"r\.libsvm, line 1: feature index 0 is below 1"):
        read_file(
            write(tmp_path / "r.libsvm", "1 0:1\n"), ReadOptions(format="libsvm", zero_based=False)
        )


def test_libsvm_sidecar_query_file(tmp_path: Path) -> None:
    path = write(tmp_path / "r.svm", "2 0:1.5 3:0.2\n0 1:0.7\n1 0:0.1 2:2.0 # c\n4 3:1.0\n")
    write(tmp_path / "r.svm.query", "3\n1\n")
    got = read_file(path, LIBSVM)
    assert got["qid"].tolist() == [0, 0, 0, 1] and list(data(got).columns[:2]) == ["label", "qid"]
    assert "qid" not in read_file(path, ReadOptions(format="libsvm", query_file_suffix=None))


def test_libsvm_num_features_pads_absent_columns(tmp_path: Path) -> None:
    got = read_file(
        write(tmp_path / "r.svm", "1 0:1\n0\n"), ReadOptions(format="libsvm", num_features=3)
    )
    assert list(data(got).columns) == ["label", "f0", "f1", "f2"]
    assert got[["f0", "f1", "f2"]].to_numpy().tolist() == [[1, 0, 0], [0, 0, 0]]


# --- listing ---------------------------------------------------------------------------------


def test_directory_listing_is_recursive_sorted_and_skips_hidden(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for name in (
        "b.csv",
        "a.parquet",
        "sub/c.jsonl",
        "r.svm",
        "r.svm.query",
        "_SUCCESS",
        ".hidden.csv",
        ".cache/x.csv",
        "_temporary/y.csv",
        "README",
    ):
        write(root / name, "x")
    got = list_files(str(root), None)
    assert got == [
        (str(root / "a.parquet"), "parquet"),
        (str(root / "b.csv"), "csv"),
        (str(root / "r.svm"), "libsvm"),
        (str(root / "sub" / "c.jsonl"), "jsonl"),
    ]
    explicit = list_files(str(root), "csv")  # a given format takes every visible file but sidecars
    assert [os.path.basename(p) for p, _ in explicit] == [
        "README",
        "a.parquet",
        "b.csv",
        "r.svm",
        "c.jsonl",
    ]
    assert {f for _, f in explicit} == {"csv"}


def test_glob_patterns(tmp_path: Path) -> None:
    for name in (
        "d/part-0.csv",
        "d/part-1.csv",
        "d/x/part-2.csv",
        "d/x/y/part-3.csv",
        "d/other.csv",
        "d/p.parquet",
    ):
        write(tmp_path / name, "a\n1\n")

    def names(pattern: str) -> list[str]:
        return [os.path.relpath(p, tmp_path) for p, _ in list_files(str(tmp_path / pattern), None)]

    assert names("d/*.csv") == ["d/other.csv", "d/part-0.csv", "d/part-1.csv"]
    assert names("d/**/part-*.csv") == [
        "d/part-0.csv",
        "d/part-1.csv",
        "d/x/part-2.csv",
        "d/x/y/part-3.csv",
    ]
    assert names("d/*/part-?.csv") == ["d/x/part-2.csv"]
    assert names("d/part-[1].csv") == ["d/part-1.csv"]
    assert names("d/*") == ["d/other.csv", "d/p.parquet", "d/part-0.csv", "d/part-1.csv"]


def test_file_uri(tmp_path: Path) -> None:
    path = write(tmp_path / "d" / "a.csv", "k\n1\n2\n")
    write(tmp_path / "d" / "b.csv", "k\n3\n")
    uri = (tmp_path / "d").as_uri()
    files = list_files(uri, None)
    assert files == [(f"{uri}/a.csv", "csv"), (f"{uri}/b.csv", "csv")]
    assert list_files(f"{uri}/*.csv", None) == files
    got = read_file(files[0][0], CSV)
    assert got["k"].tolist() == ["1", "2"] and rows(got) == [2, 3]
    assert set(got["_source_file"]) == {f"{uri}/a.csv"}
    assert list_files(Path(path).as_uri(), "csv") == [(Path(path).as_uri(), "csv")]


def test_single_file_and_detect_format(tmp_path: Path) -> None:
    path = write(tmp_path / "rank.train", "1 1:1\n")
    assert list_files(path, "libsvm") == [(path, "libsvm")]
    expected = {
        "a.parquet": "parquet",
        "a.PQ": "parquet",
        "a.tsv": "csv",
        "a.ndjson": "jsonl",
        "a.json": "jsonl",
        "a.svm": "libsvm",
        "a.libsvm.gz": "libsvm",
        "s3://b/k/a.csv": "csv",
    }
    for name, fmt in expected.items():
        assert detect_format(name) == fmt and fmt in FORMATS


# --- bad inputs: the message names the file (and the line) ---------------------------------


def test_missing_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere")
    with pytest.raises(SourceError, match=f"{missing}: no such file or directory"):
        list_files(missing, None)
    with pytest.raises(SourceError, match=r"no input files match .*nowhere/\*\.csv"):
        list_files(missing + "/*.csv", None)
    with pytest.raises(SourceError, match=f"{missing}/x.csv: cannot read as csv"):
        read_file(missing + "/x.csv", CSV)


def test_empty_directory_and_unmatched_glob(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=f"no input files match {tmp_path / 'empty'}"):
        list_files(str(tmp_path / "empty"), None)
    write(tmp_path / "d" / "notes.txt", "x")
    with pytest.raises(
        SourceError, match=r"no input files match .*/d .*unknown extension.*notes\.txt"
    ):
        list_files(str(tmp_path / "d"), None)
    with pytest.raises(SourceError, match=r"no input files match .*\*\.parquet"):
        list_files(str(tmp_path / "d" / "*.parquet"), None)


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.parquet", b"PAR1 this is not parquet")
    with pytest.raises(SourceError, match=r"broken\.parquet: cannot read as parquet: ") as e:
        read_file(path, PARQUET)
    assert "Traceback" not in str(e.value)
    good = tmp_path / "good.parquet"
    pd.DataFrame({"x": range(1000)}).to_parquet(good)
    truncated = write(tmp_path / "truncated.parquet", good.read_bytes()[:-100])
    with pytest.raises(SourceError, match=r"truncated\.parquet: cannot read as parquet"):
        read_file(truncated, PARQUET)


def test_binary_garbage_in_csv(tmp_path: Path) -> None:
    path = write(tmp_path / "bin.csv", b"a,b\n1,2\n\x89PNG\xff\xfe\x00,\x01\n")
    with pytest.raises(SourceError, match=r"bin\.csv: cannot read as csv: not UTF-8 text \(line 3"):
        read_file(path, CSV)


def test_csv_wrong_field_count_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,b\n1,2\n\n3,4,5\n")
    with pytest.raises(
        SourceError, match=r"d\.csv, line 4: expected 2 fields \(as on line 1\), got 3"
    ):
        read_file(path, CSV)
    with pytest.raises(SourceError, match=r"empty\.csv: cannot read as csv: the file is empty"):
        read_file(write(tmp_path / "empty.csv", ""), CSV)


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "secret.csv", "a\n1\n")
    if os.geteuid() == 0:  # root reads files whatever their mode: fail the open instead

        def denied(*_: object) -> bytes:
            raise PermissionError(13, "Permission denied", path)

        monkeypatch.setattr(readers, "_read_bytes", denied)
    else:
        os.chmod(path, 0)
    with pytest.raises(
        SourceError, match=r"secret\.csv: cannot read as csv: .*[Pp]ermission denied"
    ):
        read_file(path, CSV)


@pytest.mark.parametrize(
    ("text", "line", "token", "what"),
    [
        ("1 0:1\n\n0 1:abc\n", 3, "1:abc", "the value must be a number"),
        ("1 0:1\n0 1-2\n", 2, "1-2", "index:value expected"),
        ("1 0:1\nyes 1:2\n", 2, "yes", "the label must be a number"),
        ("1 x:1\n", 1, "x:1", "the index must be an integer"),
        ("1 2.5:1\n", 1, "2.5:1", "the index must be an integer"),
        ("1 qid:a 0:1\n", 1, "qid:a", r"qid:<integer> expected"),
        ("1 qid:1.5 0:1\n", 1, "qid:1.5", r"qid:<integer> expected"),
    ],
)
def test_malformed_libsvm_token(
    tmp_path: Path, text: str, line: int, token: str, what: str
) -> None:
    path = write(tmp_path / "bad.svm", text)
    with pytest.raises(
        SourceError, match=rf"bad\.svm, line {line}: cannot parse '{token}' \(({what})"
    ) as e:
        read_file(path, LIBSVM)
    assert str(e.value).startswith(path)


def test_libsvm_index_out_of_range(tmp_path: Path) -> None:
    path = write(tmp_path / "r.svm", "1 0:1\n0 9:1\n")
    with pytest.raises(
        SourceError, match=r"r\.svm, line 2: feature index 9 is out of range for num_features=4"
    ):
        read_file(path, ReadOptions(format="libsvm", num_features=4))


def test_libsvm_qid_on_some_lines_only(tmp_path: Path) -> None:
    path = write(tmp_path / "r.svm", "1 qid:1 0:1\n0 1:1\n")
    with pytest.raises(SourceError, match=r"r\.svm, line 2: no qid: token"):
        read_file(path, LIBSVM)


def test_sidecar_sum_mismatch_names_both_files(tmp_path: Path) -> None:
    path = write(tmp_path / "r.svm", "1 0:1\n0 1:1\n1 0:2\n")
    query = write(tmp_path / "r.svm.query", "2\n2\n")
    with pytest.raises(SourceError) as e:
        read_file(path, LIBSVM)
    assert str(e.value) == f"{query}: query sizes sum to 4 but {path} has 3 rows"
    write(tmp_path / "r.svm.query", "2\nx\n")
    with pytest.raises(SourceError, match=r"r\.svm\.query, line 2: cannot parse 'x'"):
        read_file(path, LIBSVM)


def test_malformed_json_line(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '{"a": 1}\n\n{"a": 2,,}\n{"a": 3}\n')
    with pytest.raises(SourceError, match=r"d\.jsonl, line 3: cannot parse JSON"):
        read_file(path, JSONL)
    path = write(tmp_path / "e.jsonl", '{"a": 1}\n[1, 2]\n')
    with pytest.raises(SourceError, match=r"e\.jsonl, line 2: expected a JSON object, got list"):
        read_file(path, JSONL)


def test_unknown_extension(tmp_path: Path) -> None:
    path = write(tmp_path / "data.xlsx", "x")
    with pytest.raises(SourceError, match=r"data\.xlsx: cannot tell the format .*\.parquet"):
        list_files(path, None)
    with pytest.raises(SourceError, match=r"x\.parquet\.gz: cannot tell the format"):
        detect_format("x.parquet.gz")


def test_reserved_column_in_file(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,_source_row\n1,2\n")
    with pytest.raises(
        SourceError, match=r"d\.csv: the file has the reserved column\(s\) \['_source_row'\]"
    ):
        read_file(path, CSV)


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        ReadOptions(format="xls")
    with pytest.raises(ValueError, match="delimiter"):
        ReadOptions(format="csv", delimiter=";;")
    with pytest.raises(ValueError, match="unknown format"):
        list_files(".", "xls")
    assert ReadOptions(format="csv", column_names=["a", "b"]).column_names == ("a", "b")  # type: ignore[arg-type]


# --- hardening (issue 14): bad input is an error naming the file and line, never a crash ------


def test_jsonl_nested_5000_deep_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """Arrow crashed the process (SIGSEGV) on such a line: the reader now stops before Arrow.

    Run in a child process, so that a regression fails this test instead of killing pytest.
    """
    path = write(
        tmp_path / "deep.jsonl", '{"a": 1}\n{"a": ' + "[" * 5000 + "1" + "]" * 5000 + "}\n"
    )
    code = (
        "import sys\n"
        "from components.readers import ReadOptions, SourceError, read_file\n"
        "try:\n"
        f"    read_file({path!r}, ReadOptions(format='jsonl'))\n"
        "except SourceError as e:\n"
        "    print(e)\n"
        "    sys.exit(3)\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 3, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == (
        f"{path}, line 2: JSON nested more than {readers.MAX_JSON_DEPTH} levels deep (at byte 78)"
    )


def test_jsonl_depth_limit_counts_brackets_outside_strings_only(tmp_path: Path) -> None:
    deepest = "[" * 63 + "1" + "]" * 63  # with the object around it: 64 levels, the limit
    text = '{"s": "[[[[\\"{{{{", "t": "\\\\", "u": "' + "[" * 100 + '", "a": ' + deepest + "}\n"
    got = read_file(write(tmp_path / "ok.jsonl", text), JSONL)
    assert got["s"].tolist() == ['[[[["{{{{'] and got["t"].tolist() == ["\\"]
    assert rows(got) == [1]
    over = '{"t": "\\\\", "a": [' + deepest + "]}\n"  # the escaped backslash ends the string
    with pytest.raises(SourceError, match=r"over\.jsonl, line 3: JSON nested more than 64 "):
        read_file(write(tmp_path / "over.jsonl", text + "\n" + over), JSONL)


def test_jsonl_depth_check_agrees_with_a_parser_on_random_lines() -> None:
    """The vectorised scan against a character-by-character reference (strings, escapes)."""
    import random
    import re

    def first_too_deep(line: str, limit: int) -> tuple[int | None, bool]:
        """(offset where the depth first exceeds limit, whether the line is invalid before)."""
        depth, in_string, escaped = 0, False, False
        for i, ch in enumerate(line):
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == "\\":
                return None, True  # a parser stops here: nothing deeper is parsed
            elif ch == '"':
                in_string = True
            elif ch in "[{":
                depth += 1
                if depth > limit:
                    return i, False
            elif ch in "]}":
                depth -= 1
                if depth < 0:
                    return None, True
        return None, False

    rng = random.Random(0)
    checked = 0
    for _ in range(5000):
        lines = [
            "".join(rng.choice('[[[{{]}"\\ax') for _ in range(rng.randint(0, 40)))
            for _ in range(rng.randint(1, 4))
        ]
        want, offset, invalid = None, 0, False
        for n, line in enumerate(lines, start=1):
            at, invalid = first_too_deep(line, 5)
            if at is not None:
                want = (n, offset + at)
            if at is not None or invalid:
                break
            offset += len(line) + 1
        if invalid:
            continue
        try:
            readers._check_json_depth("p", "\n".join(lines).encode(), limit=5)
            got = None
        except SourceError as e:
            m = re.fullmatch(
                r"p, line (\d+): JSON nested more than 5 levels deep \(at byte (\d+)\)", str(e)
            )
            assert m, str(e)
            got = (int(m[1]), int(m[2]))
        assert got == want, lines
        checked += 1
    assert checked > 500


def test_jsonl_not_utf8_names_the_file_line_and_byte(tmp_path: Path) -> None:
    # Arrow read this file and failed later with "Unknown error: Wrapping caf? failed".
    path = write(tmp_path / "latin1.jsonl", b'{"a": "x"}\n{"a": "caf\xe9"}\n')
    with pytest.raises(SourceError) as e:
        read_file(path, JSONL)
    assert str(e.value) == f"{path}: cannot read as jsonl: not UTF-8 text (line 2, byte 21)"
    gz = tmp_path / "latin1.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"a": "x"}\n\n{"a": "caf\xe9"}\n'))
    with pytest.raises(
        SourceError, match=r"latin1\.jsonl\.gz: .*not UTF-8 text \(line 3, byte 22\)"
    ):
        read_file(str(gz), JSONL)


def test_libsvm_stray_index_is_capped_by_max_features(tmp_path: Path) -> None:
    # One typo used to allocate a dense n x 500,000,000 matrix (MemoryError, no file or line).
    path = write(tmp_path / "typo.svm", "1 0:1 3:2\n0 1:1\n1 500000000:1\n")
    with pytest.raises(SourceError) as e:
        read_file(path, LIBSVM)
    assert str(e.value).startswith(
        f"{path}, line 3: feature index 500000000 is above max_features=1000000 (zero_based=True)"
    )
    assert readers.MAX_FEATURES == 1_000_000 == LIBSVM.max_features
    with pytest.raises(SourceError, match=r"line 2: feature index 4 is above max_features=4 "):
        read_file(
            write(tmp_path / "w.svm", "1 3:1\n0 4:1\n"), ReadOptions("libsvm", max_features=4)
        )
    wide = read_file(write(tmp_path / "w2.svm", "1 3:1\n"), ReadOptions("libsvm", max_features=4))
    assert list(data(wide).columns) == ["label", "f0", "f1", "f2", "f3"]  # index 3 < 4 fits
    with pytest.raises(ValueError, match="num_features=10 is above max_features=5"):
        ReadOptions(format="libsvm", num_features=10, max_features=5)
    with pytest.raises(ValueError, match="max_features must be >= 1"):
        ReadOptions(format="libsvm", max_features=0)


def test_libsvm_repeated_index_on_a_line_is_an_error(tmp_path: Path) -> None:
    # It used to keep the last value silently.
    path = write(tmp_path / "dup.svm", "1 0:1 2:1\n0 1:1 3:2 1:5\n1 2:1 2:1\n")
    with pytest.raises(SourceError) as e:
        read_file(path, LIBSVM)
    assert str(e.value) == f"{path}, line 2: feature index 1 is given more than once"
    one_based = write(tmp_path / "dup1.svm", "1 qid:3 1:1 2:1\n0 qid:3 2:1 2:4\n")
    with pytest.raises(SourceError, match=r"dup1\.svm, line 2: feature index 2 is given more"):
        read_file(one_based, ReadOptions(format="libsvm", zero_based=False))
    # the same index on different lines, and indices out of order, are fine
    got = read_file(write(tmp_path / "ok.svm", "1 3:1 0:2\n0 3:4 1:1\n"), LIBSVM)
    assert got[["f0", "f1", "f2", "f3"]].to_numpy().tolist() == [[2, 0, 0, 1], [0, 1, 0, 4]]


def test_listing_counts_and_names_the_skipped_files(tmp_path: Path) -> None:
    # They used to be skipped without being counted or named.
    root = tmp_path / "data"
    for name in (
        "part-0.csv",
        "sub/part-1.csv",
        "_SUCCESS",
        "_temporary/0/part-9.csv",
        ".part-0.csv.crc",
        "notes.txt",
        "r.svm",
        "r.svm.query",  # read with r.svm: not skipped
    ):
        write(root / name, "x")
    got = list_inputs(str(root), None)
    assert isinstance(got, Listing)
    assert got.files == [
        (str(root / "part-0.csv"), "csv"),
        (str(root / "r.svm"), "libsvm"),
        (str(root / "sub" / "part-1.csv"), "csv"),
    ]
    assert got.files == list_files(str(root), None)
    assert got.skipped == [
        ".part-0.csv.crc (hidden)",
        "_SUCCESS (starts with _)",
        "_temporary/0/part-9.csv (in the folder _temporary/, which starts with _)",
        "notes.txt (unknown extension)",
    ]
    # with a format every visible file is read; a glob skips only what it matches
    assert [s.split(" ")[0] for s in list_inputs(str(root), "csv").skipped] == [
        ".part-0.csv.crc",
        "_SUCCESS",
        "_temporary/0/part-9.csv",
    ]
    assert list_inputs(str(root / "*.csv"), None).skipped == []
    assert list_inputs(str(root / "part-0.csv"), None) == Listing(
        [(str(root / "part-0.csv"), "csv")]
    )


def test_ingest_tasks_carry_the_skipped_files(tmp_path: Path) -> None:
    from components.steps.ingest import SourceConfig, list_tasks, read_tasks

    for name in ("a.csv", "_SUCCESS", "notes.txt"):
        write(tmp_path / "d" / name, "k\n1\n")
    src = SourceConfig(uri=str(tmp_path / "d"))
    tasks, skipped = list_tasks(src)
    assert (
        tasks
        == read_tasks(src)
        == [{"path": str(tmp_path / "d" / "a.csv"), "format": "csv", "index": 0}]
    )
    assert skipped == ["_SUCCESS (starts with _)", "notes.txt (unknown extension)"]
    assert list_tasks(SourceConfig(uri="synthetic:binary", params={"rows": 10}))[1] == []


# --- sparse libsvm and libfm -----------------------------------------------------------------


def sparse_rows(column: pd.Series, dim: int) -> list[list[float]]:
    from components import sparse

    return sparse.to_csr(column, dim).toarray().tolist()


def test_sparse_libsvm_holds_what_the_dense_reader_holds(tmp_path: Path) -> None:
    text = "# c\n2 qid:7 3:-2e-1 0:1.5 # note\n\n0 qid:7 1:0.7\n1 qid:9\n"
    path = write(tmp_path / "r.svm", text)
    dense = read_file(path, LIBSVM)
    got = read_file(path, ReadOptions(format="libsvm", sparse="x"))
    assert list(data(got).columns) == ["label", "qid", "x"]
    assert isinstance(got["x"].dtype, pd.ArrowDtype)
    assert got["label"].tolist() == [2.0, 0.0, 1.0] and got["qid"].tolist() == [7, 7, 9]
    assert rows(got) == rows(dense) == [2, 4, 5]
    np.testing.assert_allclose(
        sparse_rows(got["x"], 4), dense[["f0", "f1", "f2", "f3"]].to_numpy(), rtol=1e-7
    )
    # entries come sorted by index within each row (3:-0.2 0:1.5 -> 0, 3)
    assert [e["index"] for e in got["x"].iloc[0]] == [0, 3]
    one = write(tmp_path / "one.svm", "1 4:1 1:2\n")
    one_based = read_file(one, ReadOptions(format="libsvm", sparse="x", zero_based=False))
    assert one_based["x"].iloc[0] == [{"index": 0, "value": 2.0}, {"index": 3, "value": 1.0}]


def test_sparse_reader_is_chunked_and_names_lines_in_later_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    lines = []
    for i in range(300):
        idx = np.sort(rng.choice(50, size=int(rng.integers(0, 6)), replace=False))
        lines.append(" ".join([str(i % 2), *(f"{j}:{rng.normal():.4f}" for j in idx)]))
    path = write(tmp_path / "big.svm", "\n".join(lines) + "\n")
    whole = read_file(path, ReadOptions(format="libsvm", sparse="x"))
    monkeypatch.setattr(readers, "SVM_CHUNK", 64)  # ~10 lines per chunk, lines cut across reads
    chunked = read_file(path, ReadOptions(format="libsvm", sparse="x"))
    assert rows(chunked) == list(range(1, 301))
    assert sparse_rows(chunked["x"], 50) == sparse_rows(whole["x"], 50)
    assert chunked["label"].tolist() == whole["label"].tolist()
    assert np.allclose(sparse_rows(chunked["x"], 50), read_file(path, LIBSVM).iloc[:, 1:-2])
    bad = write(tmp_path / "bad.svm", "\n".join([*lines[:250], "1 3:1 3:2", *lines[250:]]))
    with pytest.raises(SourceError) as e:
        read_file(bad, ReadOptions(format="libsvm", sparse="x"))
    assert str(e.value) == f"{bad}, line 251: feature index 3 is given more than once"
    bad = write(tmp_path / "bad2.svm", "\n".join([*lines[:200], "1 4:x"]))
    with pytest.raises(SourceError, match=r"bad2\.svm, line 201: cannot parse '4:x' \(the value"):
        read_file(bad, ReadOptions(format="libsvm", sparse="x"))
    qid = write(tmp_path / "q.svm", "1 qid:1 0:1\n" * 20 + "0 1:1\n")
    with pytest.raises(SourceError, match=r"q\.svm, line 21: no qid: token, while other lines"):
        read_file(qid, ReadOptions(format="libsvm", sparse="x"))


def test_sparse_reader_never_builds_a_dense_matrix(tmp_path: Path) -> None:
    # 2,000 lines with indices up to 2e9: as dense float64 columns that is 32 TB.
    import tracemalloc

    rng = np.random.default_rng(1)
    idx = np.sort(rng.choice(2_000_000_000, size=(2000, 10)), axis=1)
    text = "".join("1 " + " ".join(f"{j}:1" for j in np.unique(row)) + "\n" for row in idx)
    path = write(tmp_path / "wide.svm", text)
    tracemalloc.start()
    got = read_file(path, ReadOptions(format="libsvm", sparse="x"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20, peak  # numpy temporaries of ~20k tokens, not a matrix
    from components import sparse

    indptr, indices, _ = sparse.csr_arrays(got["x"])
    assert indptr[-1] == sum(len(np.unique(r)) for r in idx) and indices.max() == idx.max()
    with pytest.raises(SourceError, match=r"wide\.svm, line 1: feature index \d+ is above "):
        read_file(path, LIBSVM)  # the dense reader refuses it (max_features)
    with pytest.raises(SourceError, match=r"line 1: feature index 3000000000 is above 2147483646"):
        read_file(
            write(tmp_path / "huge.svm", "1 3000000000:1\n"), ReadOptions("libsvm", sparse="x")
        )


def test_sparse_libsvm_sidecar_query_file_and_num_features(tmp_path: Path) -> None:
    path = write(tmp_path / "r.svm", "2 0:1.5\n0 1:0.7\n1 2:2.0\n")
    write(tmp_path / "r.svm.query", "2\n1\n")
    got = read_file(path, ReadOptions(format="libsvm", sparse="x"))
    assert got["qid"].tolist() == [0, 0, 1]
    with pytest.raises(SourceError, match=r"line 3: feature index 2 is out of range for num_"):
        read_file(path, ReadOptions(format="libsvm", sparse="x", num_features=2))
    with pytest.raises(ValueError, match=r"sparse must name a column other than label"):
        ReadOptions(format="libsvm", sparse="label")


def test_libfm_fields_become_categorical_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "r.ffm", "1 0:5:1 1:9:1\n# comment\n0 2:3:1 1:7:1\n1\n")
    assert detect_format(path) == "libfm" and detect_format("x.libfm.gz") == "libfm"
    got = read_file(path, ReadOptions(format="libfm"))
    assert list(data(got).columns) == ["label", "f0", "f1", "f2"]
    assert got["f0"].tolist() == [5, None, None] or got["f0"].isna().tolist() == [
        False,
        True,
        True,
    ]
    assert got["f1"].astype("float").fillna(-1).tolist() == [9, 7, -1]
    assert got["f2"].astype("float").fillna(-1).tolist() == [-1, 3, -1]
    assert rows(got) == [1, 3, 4]
    padded = read_file(path, ReadOptions(format="libfm", num_fields=5, feature_prefix="field"))
    assert list(data(padded).columns) == ["label", "field0", "field1", "field2", "field3", "field4"]
    assert padded["field4"].isna().all()
    # the same file into one sparse column (the fields dropped)
    ids = read_file(path, ReadOptions(format="libfm", sparse="ids"))
    assert list(data(ids).columns) == ["label", "ids"]
    assert [[e["index"] for e in r] for r in ids["ids"]] == [[5, 9], [3, 7], []]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 0:5:1\n0 3:1\n", r"line 2: cannot parse '3:1' \(field:index:value expected\)"),
        ("1 0:5:1\n0 a:3:1\n", r"line 2: cannot parse 'a:3:1' \(the field must be an integer\)"),
        ("1 0::1\n", r"line 1: cannot parse '0::1' \(field:index:value expected\)"),
        ("1 -1:3:1\n", r"line 1: cannot parse '-1:3:1' \(the field must be 0 or more\)"),
        ("1 0:2.5:1\n", r"line 1: cannot parse '0:2.5:1' \(the index must be an integer\)"),
        ("1 0:2:1 1:4:0.5\n", r"line 1: field 1, index 4 has the value 0.5; fields are read as"),
        ("1 0:2:1\n0 1:4:1 1:5:1\n", r"line 2: field 1 has more than one index"),
        ("1 0:2:1\n0 7:4:1\n", r"line 2: field 7 is out of range for num_fields=3"),
        ("1 qid:1 0:2:1\n0 qid:x 0:1:1\n", r"line 2: cannot parse 'qid:x' \(qid:<integer>"),
    ],
)
def test_malformed_libfm_names_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "bad.ffm", text)
    with pytest.raises(SourceError, match=rf"^{path}, {message}"):
        read_file(path, ReadOptions(format="libfm", num_fields=3))


def test_libfm_with_qid_and_too_many_fields(tmp_path: Path) -> None:
    got = read_file(
        write(tmp_path / "q.ffm", "1 qid:4 0:2:1\n0 qid:4 1:3:1\n"), ReadOptions("libfm")
    )
    assert got["qid"].tolist() == [4, 4] and list(data(got).columns) == ["label", "qid", "f0", "f1"]
    with pytest.raises(SourceError, match=r"line 1: field 20000 is above 10,000 fields"):
        read_file(write(tmp_path / "w.ffm", "1 20000:2:1\n"), ReadOptions("libfm"))
