"""The notebooks run top to bottom against this session's Ray cluster (nbclient, real kernel)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("ray_session")

PORT = "8011"  # the port the serving tests use: Serve keeps the first HTTP options it gets


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        ("01_ranking_quickstart.ipynb", ["succeeded", "'ranked'"]),
        ("02_classification.ipynb", ["False - not confidently better", "('production',)"]),
    ],
)
def test_notebook_executes(
    name: str, expect: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat
    import ray
    from nbclient import NotebookClient

    monkeypatch.setenv("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    monkeypatch.setenv("RAYLINE_STORAGE", str(tmp_path))
    monkeypatch.setenv("RAYLINE_NOTEBOOK_PORT", PORT)
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    text = "\n".join(
        str(out.get("text", "")) + str(out.get("data", {}).get("text/plain", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    for needle in expect:
        assert needle in text, text[-2000:]
