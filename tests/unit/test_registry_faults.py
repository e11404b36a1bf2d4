"""Registry faults: each test creates the fault on disk and checks the next command works.

A truncated newest alias revision (fallback to the newest readable one, with a warning naming
the file), a revision number edited out of range (a RegistryError naming the file, never a lost
update), malformed history entries (skipped by rollback), and ``.tmp-*`` leftovers of a crashed
writer (swept by the next publish, never a live writer's). No Ray.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from pathlib import Path

import pytest

from components import bundle
from components.bundle import write_bundle
from components.registry import Registry, RegistryError, RegistryWarning

FILES = {"model.ubj": b"model", "metrics.json": b"{}"}
OLD_NS = time.time_ns() - 3600 * 1_000_000_000  # an hour ago: long past every grace period


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(bundle.KEY_ENV, raising=False)


@pytest.fixture(params=[False, True], ids=["local", "non-local"])
def reg(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Registry:
    """A registry with model 'm' (versions 1-3) and production 1 -> 2 (revisions 1, 2)."""
    if request.param:  # the object-store code path on the local disk
        monkeypatch.setattr(bundle, "_is_local_fs", lambda fs: False)
    src = write_bundle(tmp_path / "b", FILES)
    r = Registry(tmp_path / "storage")
    for _ in range(3):
        r.publish("m", src)
    r.set_alias("m", "production", 1)
    r.set_alias("m", "production", 2)
    return r


def model_dir(reg: Registry) -> Path:
    return Path(reg.root) / "m"


def revision_files(reg: Registry) -> list[Path]:
    return sorted(p for p in (model_dir(reg) / ".aliases").iterdir() if p.name.endswith(".json"))


def age(path: Path) -> None:
    """Make ``path`` (and everything below it) look an hour old."""
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(p, ns=(OLD_NS, OLD_NS))


# -- a truncated newest revision ------------------------------------------------------------------


@pytest.mark.parametrize("snapshot", [True, False], ids=["with-aliases.json", "log-only"])
def test_truncated_newest_revision_falls_back(reg: Registry, snapshot: bool) -> None:
    newest = revision_files(reg)[-1]
    assert newest.name == "000000000002.json"
    newest.write_bytes(newest.read_bytes()[:10])  # a crash / disk fault truncated it
    age(newest)
    if not snapshot:
        (model_dir(reg) / "aliases.json").unlink()
    # readers: the newest readable state, at once (it was 7 s and then a RegistryError)
    start = time.monotonic()
    with pytest.warns(RegistryWarning, match=re.escape(f"{newest}: damaged") + ".*not valid JSON"):
        aliases = reg.aliases("m")
    assert time.monotonic() - start < 0.5
    # aliases.json still holds revision 2; without it, revision 1 is the newest readable state
    assert aliases == ({"production": 2} if snapshot else {"production": 1})
    with pytest.warns(RegistryWarning):
        assert reg.resolve("m").version == aliases["production"]
    # writers: the next update goes above the damaged revision (no endless "already exists")
    start = time.monotonic()
    with pytest.warns(RegistryWarning, match=re.escape(str(newest))):
        reg.set_alias("m", "production", 3)
    assert time.monotonic() - start < 5
    assert [p.name for p in revision_files(reg)][-1] == "000000000003.json"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the damaged file is no longer the newest: no warning
        assert reg.aliases("m") == {"production": 3}
        assert reg.resolve("m").version == 3
        assert reg.rollback("m") == (3, aliases["production"])
    doc = json.loads((model_dir(reg) / "aliases.json").read_text())
    assert doc["revision"] == 4 and doc["aliases"] == {"production": aliases["production"]}


def test_freshly_truncated_revision_is_waited_for_then_skipped(reg: Registry) -> None:
    """A just-modified unreadable file may be a non-atomic write in progress: it is waited for
    (about a second), then skipped; the call succeeds instead of failing after ~7 s."""
    newest = revision_files(reg)[-1]
    newest.write_bytes(b"")
    start = time.monotonic()
    with pytest.warns(RegistryWarning, match=re.escape(str(newest))):
        assert reg.aliases("m") == {"production": 2}
    with pytest.warns(RegistryWarning, match=re.escape(str(newest))):
        reg.set_alias("m", "candidate", 1)
    assert time.monotonic() - start < 6
    assert reg.aliases("m") == {"production": 2, "candidate": 1}


def test_nothing_readable_is_a_clear_error(reg: Registry) -> None:
    for p in revision_files(reg):
        p.write_bytes(b'{"aliases": ')
        age(p)
    (model_dir(reg) / "aliases.json").unlink()
    start = time.monotonic()
    with pytest.raises(RegistryError, match="no alias revision is readable") as e:
        reg.aliases("m")
    assert time.monotonic() - start < 0.5
    assert "000000000001.json" in str(e.value) and "000000000002.json" in str(e.value)
    with pytest.raises(RegistryError, match="no alias revision is readable"):
        reg.set_alias("m", "production", 3)  # refused, not reset to an empty alias state
    # a damaged aliases.json as the only state
    for p in revision_files(reg):
        p.unlink()
    (model_dir(reg) / "aliases.json").write_bytes(b"{")
    age(model_dir(reg) / "aliases.json")
    with pytest.raises(RegistryError, match=r"aliases\.json: not valid JSON"):
        reg.aliases("m")


# -- revision numbers -------------------------------------------------------------------------------


def test_out_of_range_revision_in_aliases_json_is_refused(reg: Registry) -> None:
    snap = model_dir(reg) / "aliases.json"
    doc = json.loads(snap.read_text())
    doc["revision"] = 10**12  # edited by hand; revision files have 12 digits
    snap.write_text(json.dumps(doc))
    with pytest.raises(RegistryError, match=re.escape(f"{snap}: 'revision' is 1000000000000")):
        reg.set_alias("m", "candidate", 1)  # was: reported success, and the update was lost
    assert [p.name for p in revision_files(reg)] == ["000000000001.json", "000000000002.json"]
    with pytest.raises(RegistryError, match=r"aliases\.json"):
        reg.aliases("m")
    for bad in (-1, "3", True, 1.5):
        doc["revision"] = bad
        snap.write_text(json.dumps(doc))
        with pytest.raises(RegistryError, match="'revision' is"):
            reg.aliases("m")
    doc["revision"] = 2  # fixed: the next command works
    snap.write_text(json.dumps(doc))
    reg.set_alias("m", "candidate", 1)
    assert reg.aliases("m") == {"production": 2, "candidate": 1}


def test_revision_file_out_of_range_or_renumbered_is_refused(reg: Registry) -> None:
    newest = revision_files(reg)[-1]
    good = newest.read_bytes()
    doc = json.loads(good)
    doc["revision"] = 10**12
    newest.write_text(json.dumps(doc))
    with pytest.raises(RegistryError, match=re.escape(f"{newest}: 'revision' is 1000000000000")):
        reg.set_alias("m", "candidate", 1)
    doc["revision"] = 7
    newest.write_text(json.dumps(doc))
    with pytest.raises(
        RegistryError, match=re.escape(f"{newest}: holds revision 7 but its name says 2")
    ):
        reg.set_alias("m", "candidate", 1)
    assert not any(len(p.stem) != 12 for p in revision_files(reg))
    newest.write_bytes(good)
    reg.set_alias("m", "candidate", 1)
    assert reg.aliases("m") == {"production": 2, "candidate": 1}


# -- malformed history ------------------------------------------------------------------------------


def test_rollback_skips_malformed_history_entries(reg: Registry) -> None:
    reg.set_alias("m", "production", 3)
    newest = revision_files(reg)[-1]
    doc = json.loads(newest.read_text())
    junk = [
        {"alias": "production", "at": "2024-01-01T00:00:00.000Z"},  # no version
        {"alias": "production", "version": "2"},
        {"alias": "production", "version": True},
        {"alias": "production", "version": 0},
        "not an entry",
        {"version": 1},
    ]
    doc["history"] = [*doc["history"][:1], *junk, *doc["history"][1:], *junk]
    newest.write_text(json.dumps(doc))
    (model_dir(reg) / "aliases.json").unlink()  # as if edited by hand
    assert reg.previous("m", "production") == 2
    assert reg.rollback("m") == (3, 2)  # was: KeyError 'version'
    assert reg.rollback("m") == (2, 1)
    assert reg.aliases("m") == {"production": 1}
    assert len(reg.history("m")) == 3 + 2 * len(junk) + 2  # kept as they were


# -- temporary leftovers ----------------------------------------------------------------------------


def test_publish_sweeps_stale_temp_leftovers_only(reg: Registry, tmp_path: Path) -> None:
    mdir = model_dir(reg)
    crashed = mdir / ".tmp-0123456789abcdef0123456789abcdef"  # a publish that crashed mid-copy
    (crashed / "extra").mkdir(parents=True)
    (crashed / "model.ubj").write_bytes(b"partial")
    (crashed / "extra" / "x").write_bytes(b"partial")
    snapshot_tmp = mdir / "aliases.json.tmp-0123456789abcdef0123456789abcdef"
    snapshot_tmp.write_bytes(b"{")
    revision_tmp = mdir / ".aliases" / "000000000003.json.tmp-0123456789abcdef0123456789abcdef"
    revision_tmp.write_bytes(b"{")
    for p in (crashed, snapshot_tmp, revision_tmp):
        age(p)
    live = mdir / ".tmp-live"  # a concurrent publisher, just started
    live.mkdir()
    (live / "model.ubj").write_bytes(b"being copied")
    busy = mdir / ".tmp-busy"  # old folder, but a file in it is still being written
    busy.mkdir()
    (busy / "model.ubj").write_bytes(b"being copied")
    os.utime(busy, ns=(OLD_NS, OLD_NS))
    assert reg.publish("m", tmp_path / "b").version == 4
    assert not crashed.exists() and not snapshot_tmp.exists() and not revision_tmp.exists()
    assert (live / "model.ubj").read_bytes() == b"being copied"
    assert (busy / "model.ubj").read_bytes() == b"being copied"
    assert [v.version for v in reg.versions("m")] == [1, 2, 3, 4]
    assert reg.aliases("m") == {"production": 2}
    # the live ones become stale once their writer is gone for good
    age(live)
    age(busy)
    reg.publish("m", tmp_path / "b")
    assert not live.exists() and not busy.exists()
    assert not [p for p in mdir.rglob("*") if bundle.TMP_MARK in p.name]
