"""The library stands alone: importing it loads no step runtime, CLI, contract or pipeline module.

Run in a fresh interpreter, so what earlier tests imported does not hide an import.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.reliability.conftest import REPO

LIBRARY = ("steps.models", "steps.models.efficientvit", "steps.models.ellipse", "steps.train.losses",
           "steps.train.engine", "steps.train.metrics", "steps.train.checkpoints", "steps.train.fit",
           "steps.data.loading", "steps.data.transforms", "steps.data.synthetic", "steps.data.archive",
           "steps.export.onnx_export", "steps.report.evaluate", "steps.report.robustness",
           "steps.report.perturb", "steps.report.classical", "steps.tracking", "steps.train.search",
           "steps.train.study_storage")
FORBIDDEN = ("steps.runtime", "steps.__main__", "contracts", "pipelines")


def loaded_after_import(modules: tuple[str, ...]) -> list[str]:
    code = (f"import importlib, json, sys\nfor m in {list(modules)!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@pytest.mark.parametrize("modules", [("steps.models", "steps.train.losses"), LIBRARY],
                         ids=["models and losses", "the whole library"])
def test_library_imports_without_runtime_cli_or_contracts(modules):
    loaded = loaded_after_import(modules)
    offending = [m for m in loaded if m in FORBIDDEN or m.startswith(tuple(f + "." for f in FORBIDDEN))]
    assert offending == [], f"importing {modules} loaded {offending}"
