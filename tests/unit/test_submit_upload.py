"""`rayline submit` uploads the working directory: never secrets, local databases or the storage.

Found by hand: `rayline submit` uploaded `.env`, ssh keys, `secrets/`, `mlflow.db` and a storage
folder not named `storage`. ``upload_listing`` lists what Ray packs for a folder with the same
excludes (and Ray's own defaults and ignore files); the last test checks it against Ray's own
packaging walk on the same folder, so the printed count is what is uploaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import submit
from pipelines.submit import EXCLUDES, excludes_for, runtime_env, upload_listing


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


SECRETS = {
    ".env": "AWS_SECRET_ACCESS_KEY=x",
    ".env.local": "TOKEN=y",
    "conf/.envrc": "export K=1",
    "keys/server.pem": "-----BEGIN",
    "keys/tls.key": "k",
    "id_rsa": "ssh",
    "id_rsa.pub": "ssh",
    "deploy/id_ed25519": "ssh",
    ".ssh/config": "Host x",
    "secrets/db_password": "hunter2",
    "app/secrets/token": "t",
    "mlflow.db": "sqlite",
    "runs/cache.sqlite3": "sqlite",
}
CODE = {
    "job.py": "print('hi')",
    "pkg/__init__.py": "",
    "pkg/id_map.py": "IDS = {}",  # not an ssh key: a bare `id_*` pattern would drop it
    "pkg/secrets.py": "# a module named secrets is code",
    "spec.yaml": "name: x",
    "README.md": "# x",
}


def test_secrets_databases_and_caches_are_not_uploaded(tmp_path: Path) -> None:
    root = _tree(
        tmp_path / "wd",
        {**SECRETS, **CODE, ".git/config": "x", "pkg/__pycache__/m.pyc": "x", "data/x.csv": "1"},
    )
    up = upload_listing(str(root), excludes_for(str(root)))
    assert sorted(name for name, _ in up.files) == sorted(CODE)
    assert up.total_bytes == sum(len(t) for t in CODE.values())
    assert {".env", ".env.local", "id_rsa", "id_rsa.pub", "mlflow.db", "secrets/"} <= set(
        up.excluded
    )


def test_the_configured_storage_inside_the_working_dir_is_not_uploaded(tmp_path: Path) -> None:
    root = _tree(
        tmp_path / "wd",
        {
            "job.py": "x",
            "out/store/registry/m/1/model.ubj": "weights",  # a storage not named `storage`
            "out/notes.txt": "kept",
            "elsewhere/store/keep.txt": "a folder of the same name elsewhere is kept",
        },
    )
    excludes = excludes_for(str(root), [str(root / "out" / "store"), "s3://bucket/x", None])
    assert excludes[: len(EXCLUDES)] == EXCLUDES and excludes[len(EXCLUDES) :] == ["/out/store"]
    files = {name for name, _ in upload_listing(str(root), excludes).files}
    assert files == {"job.py", "out/notes.txt", "elsewhere/store/keep.txt"}
    # the same list goes to Ray
    assert runtime_env(str(root), None, excludes)["excludes"] == excludes


def test_a_relative_storage_counts_from_here_and_from_the_working_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tmp_path / "wd", {"job.py": "x", "st/a": "1", "sub/st/b": "2"})
    monkeypatch.chdir(root / "sub")
    assert excludes_for(str(root), ["st"])[len(EXCLUDES) :] == ["/sub/st", "/st"]
    files = {name for name, _ in upload_listing(str(root), excludes_for(str(root), ["st"])).files}
    assert files == {"job.py"}


def test_glob_characters_in_a_storage_name_are_literal(tmp_path: Path) -> None:
    root = _tree(tmp_path / "wd", {"job.py": "x", "out[1]/a": "1", "out1/b": "2", "o*t/c": "3"})
    excludes = excludes_for(str(root), [str(root / "out[1]"), str(root / "o*t")])
    files = {name for name, _ in upload_listing(str(root), excludes).files}
    assert files == {"job.py", "out1/b"}


def test_a_storage_that_is_the_working_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is the working directory"):
        excludes_for(str(tmp_path), [str(tmp_path)])


def test_gitignore_and_rayignore_are_honoured_like_ray_does(tmp_path: Path) -> None:
    root = _tree(
        tmp_path / "wd",
        {
            ".gitignore": "# comment\n*.log\nbuild/\n!keep.log\n/top_only.txt\n",
            ".rayignore": "notes/**\n",
            "a.log": "x",
            "keep.log": "kept by !",
            "sub/b.log": "x",
            "build/out.bin": "x",
            "top_only.txt": "x",
            "sub/top_only.txt": "kept: the pattern is anchored",
            "notes/n.md": "x",
            "sub/.gitignore": "local.txt\n",
            "sub/local.txt": "x",
            "local.txt": "kept: sub/.gitignore is relative to sub/",
        },
    )
    files = {name for name, _ in upload_listing(str(root), EXCLUDES).files}
    assert files == {
        ".gitignore",
        ".rayignore",
        "keep.log",
        "sub/top_only.txt",
        "sub/.gitignore",
        "local.txt",
    }
    ignoring = {name for name, _ in upload_listing(str(root), [], include_gitignore=False).files}
    assert "a.log" in ignoring and "notes/n.md" not in ignoring  # .rayignore still applies


def test_summary_names_count_size_and_what_was_left_out(tmp_path: Path) -> None:
    root = _tree(tmp_path / "wd", {"job.py": "x" * 2048, ".env": "s", "secrets/a": "1"})
    line = upload_listing(str(root), EXCLUDES).summary()
    assert line.startswith(f"uploading 1 files (2.0 KiB) from {root}")
    assert "left out: .env, secrets/" in line


def test_submit_prints_the_upload_and_refuses_one_over_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tmp_path / "wd", {"spec.yaml": "name: x", "big.bin": "x" * 2000})
    monkeypatch.setattr(submit, "UPLOAD_LIMIT", 1000)
    lines: list[str] = []
    with pytest.raises(ValueError, match=r"over Ray's .* limit.*big\.bin"):
        submit.submit(
            "http://127.0.0.1:1", str(root / "spec.yaml"), [], str(root), out=lines.append
        )
    assert lines and lines[0].startswith("uploading 2 files")


def test_the_listing_is_what_rays_packaging_uploads(tmp_path: Path) -> None:
    """The same folder through Ray's own walk (ray._private.runtime_env.packaging, no Ray
    started): the files it would zip are the files listed."""
    from ray._private.ray_constants import get_runtime_env_default_excludes
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    root = _tree(
        tmp_path / "wd",
        {
            **SECRETS,
            **CODE,
            ".git/HEAD": "x",
            ".venv/bin/python": "x",
            "storage/runs/r": "x",
            "nested/storage/x": "x",
            "pkg/__pycache__/m.pyc": "x",
            "benchmarks/results/r.json": "x",
            "benchmarks/run.py": "x",
            "t/data.parquet": "x",
            "t/data/y": "x",
            "mlruns/0/meta.yaml": "x",
            "out/store/a": "x",
            "o*t[1]/a": "x",
            "oXt1/a": "x",
            ".gitignore": "*.tmp\nlogs/\n!important.tmp\n",
            "a.tmp": "x",
            "important.tmp": "x",
            "logs/l.txt": "x",
            "deep/.rayignore": "*.txt\n",
            "deep/a.txt": "x",
            "deep/b.py": "x",
        },
    )
    excludes = excludes_for(str(root), [str(root / "out" / "store"), str(root / "o*t[1]")])
    mine = {name for name, _ in upload_listing(str(root), excludes).files}
    theirs: set[str] = set()

    def handler(path: Path) -> None:
        if path.is_file():
            theirs.add(path.relative_to(root).as_posix())

    rules = [*get_runtime_env_default_excludes(), *excludes]
    _dir_travel(root, [_get_excludes(root, rules)], handler, include_gitignore=True)
    assert mine == theirs
    assert "pkg/id_map.py" in mine and "oXt1/a" in mine
    assert not {"mlflow.db", ".env", "id_rsa", "o*t[1]/a", "out/store/a"} & mine
