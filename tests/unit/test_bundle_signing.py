"""Bundle signing (RAYLINE_BUNDLE_KEY) and symbolic links inside bundles. No Ray.

The MANIFEST sha256s detect corruption and half-written bundles; a writer who can rewrite the
bundle can rewrite the MANIFEST too. Only the optional HMAC signature stops that, and only for
processes that hold the key.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from components import bundle
from components.bundle import (
    KEY_ENV,
    MANIFEST,
    SIGNATURE,
    BundleError,
    read_bundle_file,
    read_json,
    verify_bundle,
    write_bundle,
)
from components.predictor import Predictor
from components.registry import Registry

FILES = {
    "model.ubj": b"\x00\x01binary-model\xff" * 50,
    "metrics.json": b'{"selection_metric": "auc", "test": {"auc": 0.75}}',
    "extra/notes.txt": b"nested files are allowed",
}
KEY = "k" * 32


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)


def on_disk(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def forge(path: Path, name: str, data: bytes) -> None:
    """What a malicious writer without the key can do: change a file and fix up its MANIFEST."""
    (path / name).write_bytes(data)
    doc = json.loads((path / MANIFEST).read_bytes())
    doc["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (path / MANIFEST).write_bytes((json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())


def rules_bundle(path: Path) -> str:
    import pandas as pd

    from tests import bundles

    frame = pd.DataFrame({"clicks": [0.0, 3.0]})
    transform = bundles.features(frame, numeric=("clicks",), categorical=())
    doc = {"rules": [{"name": "r", "when": "clicks > 1", "score": 1.0}], "default": {"score": 0}}
    return bundles.write(path, bundles.rules_contents("ranking", doc, transform))


# -- without a key: exactly as before ---------------------------------------------------------------


def test_unset_key_writes_the_same_bundle_as_before(tmp_path: Path) -> None:
    path = Path(write_bundle(tmp_path / "b", FILES))
    assert on_disk(path) == sorted([*FILES, MANIFEST])  # no SIGNATURE, nothing new
    raw = (path / MANIFEST).read_bytes()
    created = json.loads(raw)["created_at"]
    entries = {
        n: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)} for n, d in FILES.items()
    }
    legacy = {"format": 1, "created_at": created, "files": entries}  # the format before signing
    assert raw == (json.dumps(legacy, indent=1, sort_keys=True) + "\n").encode()
    for name, data in FILES.items():
        assert (path / name).read_bytes() == data
    assert verify_bundle(path)["files"] == entries


def test_unset_key_loads_signed_bundles_without_checking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    path = Path(write_bundle(tmp_path / "b", FILES))
    monkeypatch.delenv(KEY_ENV)
    assert verify_bundle(path)  # SIGNATURE is allowed (not "not listed")
    (path / SIGNATURE).write_text("garbage")  # and not checked
    assert verify_bundle(path) and read_json(path, "metrics.json")["test"]["auc"] == 0.75


# -- with a key ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("remote", [False, True], ids=["local", "non-local"])
def test_signed_bundle_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remote: bool
) -> None:
    if remote:
        monkeypatch.setattr(bundle, "_is_local_fs", lambda fs: False)
    monkeypatch.setenv(KEY_ENV, KEY)
    path = Path(write_bundle(tmp_path / "b", FILES))
    assert on_disk(path) == sorted([*FILES, MANIFEST, SIGNATURE])
    sig = json.loads((path / SIGNATURE).read_bytes())
    assert sig["algorithm"] == "hmac-sha256" and len(sig["manifest_hmac"]) == 64
    assert set(verify_bundle(path)["files"]) == set(FILES)  # SIGNATURE is not a bundle file
    assert read_bundle_file(path, "model.ubj") == FILES["model.ubj"]
    # the registry keeps the signature with the copy, and the copy verifies
    mv = Registry(tmp_path / "storage").publish("m", path, aliases=["production"])
    assert (Path(mv.path) / SIGNATURE).read_bytes() == (path / SIGNATURE).read_bytes()
    assert verify_bundle(mv.path)


def test_signed_bundle_through_the_predictor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    path = rules_bundle(tmp_path / "b")
    assert (Path(path) / SIGNATURE).is_file()
    assert Predictor.load(path).task == "ranking"
    monkeypatch.setenv(KEY_ENV, "another key")
    with pytest.raises(BundleError, match="signed with a different key"):
        Predictor.load(path)
    monkeypatch.setenv(KEY_ENV, KEY)
    (Path(path) / SIGNATURE).unlink()
    with pytest.raises(BundleError, match="unsigned"):
        Predictor.load(path)


def test_wrong_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    path = Path(write_bundle(tmp_path / "b", FILES))
    monkeypatch.setenv(KEY_ENV, "not the key that signed it")
    for call in (
        lambda: verify_bundle(path),
        lambda: read_bundle_file(path, "model.ubj"),
        lambda: read_json(path, "metrics.json"),
        lambda: Registry(tmp_path / "storage").publish("m", path),
    ):
        with pytest.raises(BundleError, match="signed with a different key") as e:
            call()
        assert str(path) in str(e.value) and KEY_ENV in str(e.value)
    assert Registry(tmp_path / "storage").models() == []


def test_unsigned_bundle_is_refused_when_a_key_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = Path(write_bundle(tmp_path / "b", FILES))  # written without a key
    monkeypatch.setenv(KEY_ENV, KEY)
    for call in (
        lambda: verify_bundle(path),
        lambda: read_json(path, "metrics.json"),
        lambda: Registry(tmp_path / "storage").publish("m", path),
    ):
        with pytest.raises(BundleError, match=re.escape(f"{path}: the bundle is unsigned")) as e:
            call()
        assert KEY_ENV in str(e.value)


def test_forged_manifest_is_refused_only_with_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    path = Path(write_bundle(tmp_path / "b", FILES))
    forge(path, "model.ubj", b"a different model")
    with pytest.raises(BundleError, match=f"{SIGNATURE}: the signature does not match"):
        verify_bundle(path)
    monkeypatch.delenv(KEY_ENV)
    assert verify_bundle(path)  # what the sha256s alone cannot catch (documented)
    # a forged signature file without the key is no better
    sig: dict[str, Any] = json.loads((path / SIGNATURE).read_bytes())
    sig["manifest_hmac"] = hashlib.sha256((path / MANIFEST).read_bytes()).hexdigest()
    (path / SIGNATURE).write_text(json.dumps(sig))
    monkeypatch.setenv(KEY_ENV, KEY)
    with pytest.raises(BundleError, match="does not match"):
        verify_bundle(path)
    (path / SIGNATURE).write_text('{"algorithm": "md5"}')
    with pytest.raises(BundleError, match="not a valid hmac-sha256 signature"):
        verify_bundle(path)


def test_empty_key_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path(write_bundle(tmp_path / "b", FILES))
    monkeypatch.setenv(KEY_ENV, "")
    with pytest.raises(BundleError, match=f"{KEY_ENV} is set but empty"):
        verify_bundle(path)
    with pytest.raises(BundleError, match=f"{KEY_ENV} is set but empty"):
        write_bundle(tmp_path / "c", FILES)
    assert not (tmp_path / "c").exists()


def test_signature_name_is_reserved(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        write_bundle(tmp_path / "b", {SIGNATURE: b"x"})


# -- symbolic links -----------------------------------------------------------------------------------


def test_symlinked_file_is_refused(tmp_path: Path) -> None:
    path = Path(write_bundle(tmp_path / "b", FILES))
    outside = tmp_path / "outside.ubj"
    outside.write_bytes(FILES["model.ubj"])  # the same bytes: the sha256 check alone passes
    (path / "model.ubj").unlink()
    (path / "model.ubj").symlink_to(outside)
    with pytest.raises(BundleError, match="is a symbolic link") as e:
        verify_bundle(path)
    assert f"{path}/model.ubj" in str(e.value)
    with pytest.raises(BundleError, match=re.escape(f"{path}/model.ubj: is a symbolic link")):
        read_bundle_file(path, "model.ubj")
    with pytest.raises(BundleError, match="is a symbolic link"):
        Registry(tmp_path / "storage").publish("m", path)
    assert Registry(tmp_path / "storage").models() == []


def test_symlinked_folder_manifest_and_dangling_links_are_refused(tmp_path: Path) -> None:
    path = Path(write_bundle(tmp_path / "b", FILES))
    real = tmp_path / "real_extra"
    (path / "extra").rename(real)
    (path / "extra").symlink_to(real, target_is_directory=True)
    with pytest.raises(BundleError, match=re.escape(f"{path}/extra: is a symbolic link")):
        verify_bundle(path)
    with pytest.raises(BundleError, match=re.escape(f"{path}/extra: is a symbolic link")):
        read_bundle_file(path, "extra/notes.txt")
    (path / "extra").unlink()
    real.rename(path / "extra")
    assert verify_bundle(path)
    (path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(BundleError, match=re.escape(f"{path}/dangling: is a symbolic link")):
        verify_bundle(path)
    (path / "dangling").unlink()
    manifest = tmp_path / "manifest-copy.json"
    (path / MANIFEST).rename(manifest)
    (path / MANIFEST).symlink_to(manifest)
    with pytest.raises(BundleError, match=re.escape(f"{MANIFEST}: is a symbolic link")):
        verify_bundle(path)
    with pytest.raises(BundleError, match=re.escape(f"{MANIFEST}: is a symbolic link")):
        read_bundle_file(path, "model.ubj")


def test_a_symlink_to_the_bundle_itself_is_fine(tmp_path: Path) -> None:
    path = Path(write_bundle(tmp_path / "b", FILES))
    (tmp_path / "current").symlink_to(path, target_is_directory=True)
    assert verify_bundle(tmp_path / "current")["files"].keys() == FILES.keys()


def test_the_writer_never_writes_through_a_link(tmp_path: Path) -> None:
    store = bundle.Storage(tmp_path / "d")
    (tmp_path / "d").mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    os.symlink(victim, tmp_path / "d" / "model.ubj")
    with pytest.raises(FileExistsError):
        store.write_bytes("model.ubj", b"new", atomic=False)  # inside a bundle's temp folder
    with pytest.raises(FileExistsError):
        store.copy_from(bundle.Storage(tmp_path), "victim", "model.ubj")
    store.write_bytes("model.ubj", b"new")  # atomic: replaces the link itself
    assert victim.read_bytes() == b"keep me"
    assert not (tmp_path / "d" / "model.ubj").is_symlink()
