"""Which run --resume reopens, and step keys (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines import resume


def _run(root: Path, name: str, status: str | None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    if status is not None:
        (d / "report.json").write_text(json.dumps({"status": status}))
    return d


def test_unfinished_run_is_the_newest_one_that_did_not_succeed(tmp_path: Path) -> None:
    assert resume.unfinished_run(str(tmp_path / "missing")) is None
    _run(tmp_path, "20260101-000000.000-aaaa", "succeeded")
    assert resume.unfinished_run(str(tmp_path)) is None
    killed = _run(tmp_path, "20260102-000000.000-bbbb", None)  # the driver died: no report
    assert resume.unfinished_run(str(tmp_path)) == str(killed)
    failed = _run(tmp_path, "20260103-000000.000-cccc", "failed")
    assert resume.unfinished_run(str(tmp_path)) == str(failed)
    _run(tmp_path, "20260104-000000.000-dddd", "succeeded")
    assert resume.unfinished_run(str(tmp_path)) is None  # the newest finished: start afresh


def test_step_keys(tmp_path: Path) -> None:
    k = resume.key("prepared", {"all": "abc"}, {"rows": 10})
    assert k == resume.key("prepared", {"all": "abc"}, {"rows": 10})
    assert k != resume.key("prepared", {"all": "abd"}, {"rows": 10})
    folder = tmp_path / "step"
    assert resume.matches(str(folder), k) is None
    resume.mark_done(str(folder), k, rows=3)
    assert resume.matches(str(folder), k) == {"key": k, "rows": 3}
    assert resume.matches(str(folder), "other") is None
    (folder / resume.KEY_FILE).write_text("{half")
    assert resume.stored(str(folder)) is None
