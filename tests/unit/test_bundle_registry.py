"""Bundles (MANIFEST + sha256, atomic write) and the registry (versions, aliases, concurrency).

No Ray: everything runs on the local filesystem under tmp_path. The object-store code path
(in-place writes, MANIFEST as commit marker, claim-based exclusive creates) is exercised by
treating the local filesystem as non-local.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from components import bundle
from components.bundle import (
    MANIFEST,
    BundleError,
    read_bundle_file,
    read_json,
    verify_bundle,
    write_bundle,
)
from components.registry import ModelVersion, Registry, RegistryError

FILES = {
    "model.ubj": b"\x00\x01binary-model\xff" * 50,
    "features.json": b'{"features": ["a", "b"]}',
    "metrics.json": b'{"selection_metric": "auc", "test": {"auc": 0.75}}',
    "extra/notes.txt": b"nested files are allowed",
}


def leftovers(root: Path, *, winner_claims_ok: bool = False) -> list[str]:
    """Anything that looks like a temporary or claim file/directory.

    On a non-local filesystem the winning claim of each exclusive create is kept (swept after
    ten minutes) in ``.claims/`` and ``.aliases/``; ``winner_claims_ok`` allows those.
    """
    found = []
    for p in root.rglob("*"):
        if ".claim-" in p.name and winner_claims_ok and p.parent.name in (".claims", ".aliases"):
            continue
        if bundle.TMP_MARK in p.name or ".claim-" in p.name:
            found.append(str(p.relative_to(root)))
    return found


def make_bundle(tmp_path: Path, name: str = "bundle", **extra: bytes) -> Path:
    return Path(write_bundle(tmp_path / "runs" / name, {**FILES, **extra}))


@pytest.fixture
def non_local(monkeypatch: pytest.MonkeyPatch) -> None:
    """Take the object-store code path (no atomic rename) on the local disk."""
    monkeypatch.setattr(bundle, "_is_local_fs", lambda fs: False)


# -- bundles --------------------------------------------------------------------------------


def test_bundle_round_trip(tmp_path: Path) -> None:
    path = make_bundle(tmp_path)
    assert path == tmp_path / "runs" / "bundle"
    manifest = verify_bundle(path)
    assert manifest["format"] == 1 and manifest["created_at"].endswith("Z")
    assert set(manifest["files"]) == set(FILES)
    for name, data in FILES.items():
        entry = manifest["files"][name]
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        assert read_bundle_file(path, name) == data
        assert read_bundle_file(str(path), name, verify=False) == data
    assert read_json(path, "metrics.json")["test"]["auc"] == 0.75
    on_disk = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    assert on_disk == sorted([*FILES, MANIFEST])
    assert leftovers(tmp_path) == []


def test_write_bundle_refuses_existing_directory(tmp_path: Path) -> None:
    path = make_bundle(tmp_path)
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(path, {"a.txt": b"x"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(tmp_path / "empty", {"a.txt": b"x"})
    assert verify_bundle(path)  # untouched
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "name",
    ["../evil", "/abs/path", "a/../b", "./a", "a//b", "", "a\\b", MANIFEST, "MANIFEST.json/x"],
)
def test_write_bundle_rejects_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        write_bundle(tmp_path / "b", {name: b"x"})
    assert not (tmp_path / "b").exists()
    assert leftovers(tmp_path) == []


def test_write_bundle_rejects_file_and_directory_clash(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="directory"):
        write_bundle(tmp_path / "b", {"a": b"1", "a/b": b"2"})


def test_modified_file_is_refused(tmp_path: Path) -> None:
    path = make_bundle(tmp_path)
    (path / "features.json").write_bytes(b'{"features": ["a", "c"]}')
    with pytest.raises(BundleError, match="sha256 mismatch") as e:
        verify_bundle(path)
    assert f"{path}/features.json" in str(e.value)
    with pytest.raises(BundleError, match=r"features\.json: sha256 mismatch"):
        read_bundle_file(path, "features.json")
    with pytest.raises(BundleError, match=r"features\.json: sha256 mismatch"):
        read_json(path, "features.json")
    # same size, different content
    data = bytearray(FILES["model.ubj"])
    data[3] ^= 1
    (path / "model.ubj").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.ubj: sha256 mismatch"):
        read_bundle_file(path, "model.ubj")


def test_missing_file_is_refused(tmp_path: Path) -> None:
    path = make_bundle(tmp_path)
    (path / "extra" / "notes.txt").unlink()
    with pytest.raises(BundleError, match="missing") as e:
        verify_bundle(path)
    assert f"{path}/extra/notes.txt" in str(e.value)
    with pytest.raises(BundleError, match=r"notes\.txt"):
        read_bundle_file(path, "extra/notes.txt", verify=False)


def test_extra_file_is_refused(tmp_path: Path) -> None:
    path = make_bundle(tmp_path)
    (path / "backdoor.py").write_text("print('hi')")
    with pytest.raises(BundleError, match="not listed") as e:
        verify_bundle(path)
    assert f"{path}/backdoor.py" in str(e.value)
    with pytest.raises(BundleError, match=r"backdoor\.py: not listed"):
        read_bundle_file(path, "backdoor.py")


def test_missing_manifest_is_refused(tmp_path: Path) -> None:
    path = make_bundle(tmp_path)
    (path / MANIFEST).unlink()
    with pytest.raises(BundleError, match="incomplete or not a bundle") as e:
        verify_bundle(path)
    assert f"{path}/{MANIFEST}" in str(e.value)
    with pytest.raises(BundleError, match=MANIFEST):
        read_bundle_file(path, "features.json")
    with pytest.raises(BundleError, match="no such bundle directory"):
        verify_bundle(tmp_path / "nowhere")


def test_malformed_manifest_is_refused(tmp_path: Path) -> None:
    path = make_bundle(tmp_path)
    (path / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match=f"{MANIFEST}: not valid JSON"):
        verify_bundle(path)
    (path / MANIFEST).write_text(
        json.dumps({"format": 1, "files": {"../x": {"sha256": "0", "bytes": 1}}})
    )
    with pytest.raises(BundleError, match="unsafe file name"):
        verify_bundle(path)


def test_bundle_written_in_place_on_non_local_storage(tmp_path: Path, non_local: None) -> None:
    path = write_bundle(tmp_path / "remote" / "b", FILES)
    assert verify_bundle(path)["files"].keys() == FILES.keys()
    assert leftovers(tmp_path) == []


def test_bundle_behind_a_uri(tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/b"
    assert write_bundle(uri, FILES) == uri
    assert verify_bundle(uri)["files"].keys() == FILES.keys()
    assert read_json(uri, "metrics.json")["selection_metric"] == "auc"
    assert verify_bundle(tmp_path / "b")


# -- storage: exclusive create -----------------------------------------------------------------


def _race_create(store: bundle.Storage, n: int) -> list[int]:
    """n threads try to create the same file at once; the indexes of those that succeeded."""
    barrier = threading.Barrier(n)
    winners: list[int] = []

    def go(i: int) -> None:
        barrier.wait()
        for _ in range(200):  # with claims every racer may back off: retry like callers do
            if store.create_exclusive("d/target", str(i).encode()):
                winners.append(i)
                return
            if store.exists("d/target"):
                return

    with ThreadPoolExecutor(n) as pool:
        list(pool.map(go, range(n)))
    return winners


@pytest.mark.parametrize("remote", [False, True], ids=["local-link", "non-local-claims"])
def test_create_exclusive_has_one_winner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remote: bool
) -> None:
    if remote:
        monkeypatch.setattr(bundle, "_is_local_fs", lambda fs: False)
    for trial in range(8):
        store = bundle.Storage(tmp_path / f"t{trial}")
        winners = _race_create(store, 8)
        assert len(winners) == 1
        assert store.read_bytes("d/target") == str(winners[0]).encode()
        claims = [n for n in store.list_dir("d") if ".claim-" in n]
        assert len(claims) == (1 if remote else 0)  # only the winner's claim is kept
    assert [p for p in leftovers(tmp_path) if ".claim-" not in p] == []


def test_sweep_claims_removes_only_old_claims(tmp_path: Path, non_local: None) -> None:
    store = bundle.Storage(tmp_path)
    assert store.create_exclusive("x/1", b"a")
    (claim,) = [p for p in (tmp_path / "x").iterdir() if ".claim-" in p.name]
    store.sweep_claims("x")
    assert claim.exists()  # young: kept
    os.utime(claim, ns=(0, 0))
    store.sweep_claims("x")
    assert not claim.exists() and (tmp_path / "x/1").read_bytes() == b"a"


# -- registry: publishing -------------------------------------------------------------------


def test_registry_init_creates_nothing(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "storage")
    assert reg.models() == []
    assert reg.versions("m") == []
    assert not (tmp_path / "storage").exists()


def test_publish_increments_versions(tmp_path: Path) -> None:
    src = make_bundle(tmp_path)
    reg = Registry(tmp_path / "storage")
    v1 = reg.publish("ranker", src)
    v2 = reg.publish("ranker", src, aliases=["candidate"])
    assert (v1.version, v2.version) == (1, 2)
    assert v1 == ModelVersion(
        "ranker", 1, str(tmp_path / "storage/registry/ranker/1"), v1.created_at, ()
    )
    assert v2.aliases == ("candidate",)
    assert v1.path == reg.path("ranker", 1)
    assert [v.version for v in reg.versions("ranker")] == [1, 2]
    assert reg.models() == ["ranker"]
    for v in (v1, v2):
        assert verify_bundle(v.path) == verify_bundle(src)
        assert read_bundle_file(v.path, "model.ubj") == FILES["model.ubj"]
    assert leftovers(tmp_path) == []


def test_publish_refuses_a_broken_bundle_and_leaves_nothing(tmp_path: Path) -> None:
    src = make_bundle(tmp_path)
    (src / "metrics.json").write_text("{}")
    reg = Registry(tmp_path / "storage")
    with pytest.raises(BundleError, match=r"metrics\.json: sha256 mismatch"):
        reg.publish("m", src)
    assert reg.versions("m") == [] and reg.models() == []
    assert leftovers(tmp_path) == []


def test_half_written_versions_are_invisible(tmp_path: Path) -> None:
    src = make_bundle(tmp_path)
    reg = Registry(tmp_path / "storage")
    reg.publish("m", src)
    model_dir = tmp_path / "storage" / "registry" / "m"
    # a publish in progress (or crashed) and a version directory without its commit marker
    (model_dir / ".tmp-deadbeef").mkdir()
    (model_dir / ".tmp-deadbeef" / "model.ubj").write_bytes(b"partial")
    (model_dir / "2").mkdir()
    (model_dir / "2" / "model.ubj").write_bytes(b"partial")
    # a model that only has a temporary directory
    (model_dir.parent / "ghost" / ".tmp-1").mkdir(parents=True)
    assert [v.version for v in reg.versions("m")] == [1]
    assert reg.models() == ["m"]
    assert reg.resolve("m").version == 1
    with pytest.raises(RegistryError, match="no version 2"):
        reg.resolve("m", version=2)
    with pytest.raises(RegistryError, match="no version 2"):
        reg.set_alias("m", "production", 2)
    # the next publish skips the incomplete number instead of mixing into it
    assert reg.publish("m", src).version == 3
    assert [v.version for v in reg.versions("m")] == [1, 3]


def _publish_worker(args: tuple[str, str]) -> int:
    storage, src = args
    return Registry(storage).publish("shared", src, aliases=["candidate"]).version


def _check_concurrent_result(reg: Registry, versions: list[int], n: int) -> None:
    assert sorted(versions) == list(range(1, n + 1))
    assert [v.version for v in reg.versions("shared")] == list(range(1, n + 1))
    for v in reg.versions("shared"):
        verify_bundle(v.path)
    history = reg.history("shared")
    assert sorted(e["version"] for e in history) == list(range(1, n + 1))  # no lost alias update
    assert reg.aliases("shared")["candidate"] in versions


def test_concurrent_publishes_threads(tmp_path: Path) -> None:
    src = make_bundle(tmp_path)
    storage = str(tmp_path / "storage")
    barrier = threading.Barrier(8)

    def go(_: int) -> int:
        barrier.wait()
        return _publish_worker((storage, str(src)))

    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(go, range(8)))
    _check_concurrent_result(Registry(storage), versions, 8)
    assert leftovers(tmp_path) == []


def test_concurrent_publishes_processes(tmp_path: Path) -> None:
    src = make_bundle(tmp_path)
    storage = str(tmp_path / "storage")
    # fork where available (fast: no re-import); spawn elsewhere
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(4) as pool:
        versions = pool.map(_publish_worker, [(storage, str(src))] * 8)
    _check_concurrent_result(Registry(storage), versions, 8)
    assert leftovers(tmp_path) == []


def test_concurrent_publishes_non_local(tmp_path: Path, non_local: None) -> None:
    src = make_bundle(tmp_path)
    storage = str(tmp_path / "storage")
    barrier = threading.Barrier(8)

    def go(_: int) -> int:
        barrier.wait()
        return _publish_worker((storage, str(src)))

    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(go, range(8)))
    _check_concurrent_result(Registry(storage), versions, 8)
    assert leftovers(tmp_path, winner_claims_ok=True) == []
    claims = sorted(p.name for p in (tmp_path / "storage/registry/shared/.claims").iterdir())
    assert [c for c in claims if ".claim-" not in c] == [str(v) for v in sorted(versions, key=str)]


def test_non_local_publish_skips_a_crashed_claim(tmp_path: Path, non_local: None) -> None:
    src = make_bundle(tmp_path)
    claims = tmp_path / "storage/registry/m/.claims"
    claims.mkdir(parents=True)
    (claims / "1.claim-crashed").write_bytes(b"")  # a writer died between claim and create
    reg = Registry(tmp_path / "storage")
    assert reg.publish("m", src).version == 2
    assert [v.version for v in reg.versions("m")] == [2]


def test_registry_behind_a_uri(tmp_path: Path) -> None:
    src = make_bundle(tmp_path)
    reg = Registry(f"file://{tmp_path}/storage")
    mv = reg.publish("m", src, aliases=["production"])
    assert mv.path == f"file://{tmp_path}/storage/registry/m/1"
    assert verify_bundle(mv.path) and verify_bundle(tmp_path / "storage/registry/m/1")
    assert Registry(tmp_path / "storage").resolve("m").version == 1


# -- registry: aliases ----------------------------------------------------------------------


def test_aliases_history_and_previous(tmp_path: Path) -> None:
    src = make_bundle(tmp_path)
    reg = Registry(tmp_path / "storage")
    for _ in range(3):
        reg.publish("m", src)
    assert reg.aliases("m") == {} and reg.previous("m", "production") is None
    reg.set_alias("m", "production", 1)
    assert reg.previous("m", "production") is None
    reg.set_alias("m", "production", 2)
    reg.set_alias("m", "candidate", 3)
    assert reg.aliases("m") == {"production": 2, "candidate": 3}
    assert reg.previous("m", "production") == 1
    assert reg.previous("m", "candidate") is None
    reg.set_alias("m", "production", 2)  # re-pointing at the same version keeps the previous one
    assert reg.previous("m", "production") == 1
    reg.set_alias("m", "production", reg.previous("m", "production") or 0)  # rollback
    assert reg.aliases("m")["production"] == 1 and reg.previous("m", "production") == 2
    history = reg.history("m")
    assert [(e["alias"], e["version"]) for e in history] == [
        ("production", 1),
        ("production", 2),
        ("candidate", 3),
        ("production", 2),
        ("production", 1),
    ]
    assert all(e["at"].endswith("Z") for e in history)
    doc = json.loads((tmp_path / "storage/registry/m/aliases.json").read_text())
    assert doc["aliases"] == {"production": 1, "candidate": 3} and doc["history"] == history
    assert [v.aliases for v in reg.versions("m")] == [("production",), (), ("candidate",)]
    assert leftovers(tmp_path) == []


def test_rollback_walks_back_the_production_lineage(tmp_path: Path) -> None:
    src = make_bundle(tmp_path)
    reg = Registry(tmp_path / "storage")
    for _ in range(4):
        reg.publish("m", src)
    with pytest.raises(RegistryError, match="no 'production' alias"):
        reg.rollback("m")
    reg.set_alias("m", "production", 1, note="first")
    with pytest.raises(RegistryError, match="no earlier version"):
        reg.rollback("m")
    reg.set_alias("m", "production", 2)
    reg.set_alias("m", "production", 3, note="gate: better")
    assert reg.rollback("m") == (3, 2)
    assert reg.rollback("m") == (2, 1)  # two steps back, not back to 3
    reg.set_alias("m", "production", 4)
    assert reg.rollback("m") == (4, 1)
    assert reg.aliases("m")["production"] == 1
    notes = [e.get("note", "") for e in reg.history("m")]
    assert notes[0] == "first" and notes[2] == "gate: better"
    assert (
        notes[3:5] == ["rollback from v3", "rollback from v2"] and notes[-1] == "rollback from v4"
    )


def test_set_alias_validates(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "storage")
    with pytest.raises(RegistryError, match="unknown model 'm'"):
        reg.set_alias("m", "production", 1)
    reg.publish("m", make_bundle(tmp_path))
    with pytest.raises(RegistryError, match=r"no version 7; versions: 1"):
        reg.set_alias("m", "production", 7)
    for bad in ("", "1", "-x", "has space", "a/b"):
        with pytest.raises(RegistryError, match="invalid alias"):
            reg.set_alias("m", bad, 1)
    with pytest.raises(RegistryError, match="invalid version"):
        reg.set_alias("m", "production", 0)
    assert reg.aliases("m") == {}


def test_alias_updates_are_atomic_and_never_lost(tmp_path: Path) -> None:
    src = make_bundle(tmp_path)
    reg = Registry(tmp_path / "storage")
    for _ in range(4):
        reg.publish("m", src)
    barrier = threading.Barrier(8)

    def go(i: int) -> None:
        barrier.wait()
        reg.set_alias("m", f"a{i}", i % 4 + 1)
        reg.set_alias("m", "production", i % 4 + 1)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(go, range(8)))
    aliases = reg.aliases("m")
    assert {k: v for k, v in aliases.items() if k != "production"} == {
        f"a{i}": i % 4 + 1 for i in range(8)
    }
    assert len(reg.history("m")) == 16
    doc = json.loads((tmp_path / "storage/registry/m/aliases.json").read_text())
    assert doc["revision"] == 16 and doc["aliases"] == aliases  # the snapshot ends up current
    assert leftovers(tmp_path) == []


def test_alias_updates_non_local(tmp_path: Path, non_local: None) -> None:
    src = make_bundle(tmp_path)
    reg = Registry(tmp_path / "storage")
    reg.publish("m", src)
    reg.publish("m", src)

    def go(i: int) -> None:
        reg.set_alias("m", f"a{i}", i % 2 + 1)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(go, range(6)))
    assert reg.aliases("m") == {f"a{i}": i % 2 + 1 for i in range(6)}
    assert len(reg.history("m")) == 6
    assert leftovers(tmp_path, winner_claims_ok=True) == []


def test_legacy_flat_aliases_file_is_read(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "storage")
    reg.publish("m", make_bundle(tmp_path))
    (tmp_path / "storage/registry/m/aliases.json").write_text('{"production": 1}')
    assert reg.aliases("m") == {"production": 1}
    reg.set_alias("m", "candidate", 1)
    assert reg.aliases("m") == {"production": 1, "candidate": 1}


# -- registry: resolve and names ------------------------------------------------------------


def test_resolve_defaults_and_errors(tmp_path: Path) -> None:
    src = make_bundle(tmp_path)
    reg = Registry(tmp_path / "storage")
    with pytest.raises(RegistryError, match="registered models: none"):
        reg.resolve("m")
    for _ in range(3):
        reg.publish("m", src)
    reg.publish("other", src)
    assert reg.resolve("m").version == 3  # no production alias: the latest version
    reg.set_alias("m", "production", 2)
    reg.set_alias("m", "candidate", 3)
    assert reg.resolve("m").version == 2
    assert reg.resolve("m").aliases == ("production",)
    assert reg.resolve("m", alias="candidate").version == 3
    assert reg.resolve("m", version=1).version == 1
    with pytest.raises(RegistryError, match=r"unknown model 'nope'.*registered models: m, other"):
        reg.resolve("nope")
    with pytest.raises(
        RegistryError,
        match=r"no version 9; versions: 1, 2, 3; aliases: candidate -> 3, production -> 2",
    ):
        reg.resolve("m", version=9)
    with pytest.raises(
        RegistryError, match=r"no alias 'staging'; versions: 1, 2, 3; aliases: candidate -> 3"
    ):
        reg.resolve("m", alias="staging")
    with pytest.raises(ValueError, match="not both"):
        reg.resolve("m", version=1, alias="production")


def test_resolve_refuses_a_dangling_production_alias(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "storage")
    reg.publish("m", make_bundle(tmp_path))
    reg.publish("m", make_bundle(tmp_path, "b2"), aliases=["production"])
    (tmp_path / "storage/registry/m/2" / MANIFEST).unlink()  # version 2 is no longer complete
    with pytest.raises(
        RegistryError, match="points to version 2, which does not exist; versions: 1"
    ):
        reg.resolve("m")


@pytest.mark.parametrize("name", ["", "-lead", ".hidden", "..", "a/b", "has space", "x" * 129, "é"])
def test_bad_model_names_rejected(tmp_path: Path, name: str) -> None:
    reg = Registry(tmp_path / "storage")
    src = make_bundle(tmp_path)
    for call in (
        lambda: reg.publish(name, src),
        lambda: reg.versions(name),
        lambda: reg.resolve(name),
        lambda: reg.aliases(name),
        lambda: reg.path(name, 1),
    ):
        with pytest.raises(RegistryError, match="invalid model name") as e:
            call()
        assert repr(name) in str(e.value)
    assert not (tmp_path / "storage").exists()


def test_good_model_names_accepted(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "storage")
    src = make_bundle(tmp_path)
    for name in ("a", "Ranker-v2.1_x", "0day", "x" * 128):
        assert reg.publish(name, src).version == 1
    assert len(reg.models()) == 4
    assert os.listdir(tmp_path / "storage" / "registry")
