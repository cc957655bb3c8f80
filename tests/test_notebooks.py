"""The seed's Colab notebooks run top to bottom (nbclient) on tiny CPU settings, offline: the
generated-data fallback, training through the library, the plots, the ONNX export."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = ("train_efficientvit.ipynb", "train_ellipse.ipynb")


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_notebook_runs_offline_on_the_cpu(name, tmp_path, monkeypatch):
    import nbclient  # the test extra: nbclient, nbformat, ipykernel
    import nbformat

    settings = {"OPENEDS_NB_EPOCHS": "1", "OPENEDS_NB_BATCH_SIZE": "2", "OPENEDS_NB_OFFLINE_FRAMES": "6",
                "OPENEDS_NB_EXPORTER": "legacy", "OPENEDS_NB_WORK": str(tmp_path / "work"), "HF_HUB_OFFLINE": "1",
                "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    notebook = nbformat.read(REPO / "training" / name, as_version=4)
    nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for output in cell.get("outputs", []) if output.get("output_type") == "stream")
    assert "no GPU: training runs on the CPU" in text
    assert "FALLBACK: generated OpenEDS-like frames" in text
    onnx = "best_efficientvit_model.onnx" if "efficientvit" in name else "best_ellipse_model.onnx"
    assert f"{onnx}: " in text and (tmp_path / "work" / "onnx" / onnx).is_file()
    assert "final validation" in text and "not in Colab: the file is at" in text
    images = [base64.b64decode(output["data"]["image/png"]) for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.get("outputs", []) if "image/png" in output.get("data", {})]
    assert len(images) == 2 and all(image[:8] == b"\x89PNG\r\n\x1a\n" for image in images)  # curves, samples
    (tmp_path / "work" / f"{name}.executed.ipynb").write_text(nbformat.writes(notebook))
    if os.environ.get("OPENEDS_NOTEBOOK_OUT"):  # CI keeps the executed notebooks to look at
        out = Path(os.environ["OPENEDS_NOTEBOOK_OUT"])
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, out / name)
