"""`rayline predict MODEL INPUT OUTPUT` never deletes what it did not write.

Found by hand: OUTPUT was removed with rmtree whatever it was; with OUTPUT = the input folder,
the input files were gone. Now OUTPUT is replaced only when it is rayline's own earlier output
(it holds the marker file) or an empty folder, anything else only with --overwrite, and never
when it is, holds or lies inside the input, or holds the current folder, home or the storage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipelines.batch import MARKER, PredictOutputError, check_output, publish
from pipelines.cli import main


def _input(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir(parents=True)
    (data / "a.parquet").write_text("rows")
    (data / "b.parquet").write_text("rows")
    return data


def _finished(tmp_path: Path, name: str = ".out.tmp-1") -> Path:
    """A scored folder as predict leaves it before publishing."""
    tmp = tmp_path / name
    tmp.mkdir()
    (tmp / "part-0.parquet").write_text("scores")
    return tmp


def test_output_equal_to_the_input_is_refused_and_nothing_is_deleted(tmp_path: Path) -> None:
    data = _input(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(PredictOutputError, match="is the input"):
            check_output(str(data), str(data), overwrite=overwrite)
    with pytest.raises(PredictOutputError, match="is the input"):
        publish(str(_finished(tmp_path)), str(data), str(data), "bundle", 2, overwrite=True)
    assert sorted(p.name for p in data.iterdir()) == ["a.parquet", "b.parquet"]
    assert not (tmp_path / ".out.tmp-1").exists(), "the scored folder is cleaned up"


def test_the_cli_refuses_before_starting_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray

    before = ray.is_initialized()  # `make test` runs the unit tests beside the Ray tiers
    data = _input(tmp_path)
    code = main(
        ["predict", "m", str(data), str(data), "--overwrite", "--storage", str(tmp_path / "st")]
    )
    assert code == 2
    assert "is the input" in capsys.readouterr().err
    assert sorted(p.name for p in data.iterdir()) == ["a.parquet", "b.parquet"]
    assert before or not ray.is_initialized()


def test_output_holding_or_inside_the_input_is_refused(tmp_path: Path) -> None:
    data = _input(tmp_path)
    with pytest.raises(PredictOutputError, match="holds the input"):
        check_output(str(data / "a.parquet"), str(data), overwrite=True)
    with pytest.raises(PredictOutputError, match="holds the input"):
        check_output(str(data), str(tmp_path), overwrite=True)
    with pytest.raises(PredictOutputError, match="inside the input"):
        check_output(str(data), str(data / "scored"), overwrite=True)
    with pytest.raises(PredictOutputError, match="inside the input"):
        check_output(f"file://{data}", str(data / "scored"))
    # a glob only reads what it matches
    check_output(str(data / "*.parquet"), str(data / "scored"))
    with pytest.raises(PredictOutputError, match="inside the input"):
        check_output(str(data / "**" / "*.parquet"), str(data / "scored"))
    with pytest.raises(PredictOutputError, match="is the input"):
        check_output(str(data / "*.parquet"), str(data))  # the glob's folder
    # a file input: its folder's siblings are fine
    check_output(str(data / "a.parquet"), str(data.parent / "scored"))
    # a remote input cannot overlap a local folder
    check_output("s3://bucket/data", str(tmp_path / "scored"))


def test_a_link_to_the_input_is_refused(tmp_path: Path) -> None:
    data = _input(tmp_path)
    link = tmp_path / "out"
    link.symlink_to(data, target_is_directory=True)
    with pytest.raises(PredictOutputError, match="is the input"):
        check_output(str(data), str(link), overwrite=True)


def test_an_existing_folder_of_other_files_needs_overwrite(tmp_path: Path) -> None:
    data = _input(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.xlsx").write_text("mine")
    with pytest.raises(PredictOutputError, match="--overwrite"):
        check_output(str(data), str(out))
    with pytest.raises(PredictOutputError, match="--overwrite"):
        publish(str(_finished(tmp_path)), str(out), str(data), "bundle", 1)
    assert (out / "report.xlsx").read_text() == "mine"
    publish(str(_finished(tmp_path, ".t2")), str(out), str(data), "bundle", 1, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "part-0.parquet"]


def test_an_existing_file_or_link_needs_overwrite_and_a_links_target_survives(
    tmp_path: Path,
) -> None:
    data = _input(tmp_path)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    link = tmp_path / "out"
    link.symlink_to(target, target_is_directory=True)
    with pytest.raises(PredictOutputError, match="a link"):
        check_output(str(data), str(link))
    publish(str(_finished(tmp_path)), str(link), str(data), "bundle", 1, overwrite=True)
    assert not link.is_symlink() and (link / MARKER).is_file()
    assert (target / "keep.txt").read_text() == "keep"
    a_file = tmp_path / "scores.txt"
    a_file.write_text("x")
    with pytest.raises(PredictOutputError, match="a file"):
        check_output(str(data), str(a_file))


def test_rayline_replaces_its_own_earlier_output_and_an_empty_folder(tmp_path: Path) -> None:
    data = _input(tmp_path)
    out = tmp_path / "out"
    publish(str(_finished(tmp_path, ".t1")), str(out), str(data), "bundle", 7)
    marker = json.loads((out / MARKER).read_text())
    assert marker["rows"] == 7 and marker["input"] == str(data)
    (out / "part-0.parquet").write_text("old scores")
    (out / "part-9.parquet").write_text("a file of the earlier run")
    check_output(str(data), str(out))  # no --overwrite needed
    publish(str(_finished(tmp_path, ".t2")), str(out), str(data), "bundle", 7)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "part-0.parquet"]
    assert (out / "part-0.parquet").read_text() == "scores"
    assert not [p for p in tmp_path.iterdir() if ".old-" in p.name or ".t" in p.name]
    empty = tmp_path / "empty"
    empty.mkdir()
    check_output(str(data), str(empty))


def test_the_current_folder_home_and_storage_are_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _input(tmp_path)
    work = tmp_path / "a" / "work"  # ".." below does not hold the input
    (work / "storage").mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for output in (".", "..", str(work), "~"):
        with pytest.raises(PredictOutputError, match="is or holds"):
            check_output(str(data), output, overwrite=True)
    with pytest.raises(PredictOutputError, match="holds"):
        check_output("s3://bucket/in", "/", overwrite=True)
    storage = str(work / "storage")
    with pytest.raises(PredictOutputError, match="is or holds"):
        check_output(str(data), storage, overwrite=True, protect=[storage])
    check_output(str(data), os.path.join(storage, "predictions"), protect=[storage])


@pytest.mark.parametrize(
    ("input_uri", "output", "why"),
    [
        ("s3://bucket/data/in", "s3://bucket/data", "is or holds the input"),
        ("s3://bucket/data/in", "s3://bucket/data/in", "is or holds the input"),
        ("s3://bucket/data", "s3://bucket/data/scored", "inside the input"),
        ("s3://bucket/in", "s3://bucket/store", "is or holds s3://bucket/store"),
    ],
)
def test_an_object_store_output_is_refused_by_prefix(input_uri: str, output: str, why: str) -> None:
    """Checked before anything is opened (no server needed): the input and the storage root
    (query options ignored) are never inside what would be replaced."""
    with pytest.raises(PredictOutputError, match=why):
        check_output(input_uri, output, protect=["s3://bucket/store/?endpoint_override=x:1"])
