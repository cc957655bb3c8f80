"""The commands the README documents work: parsed by the real parsers, run where cheap, and the
docker ones run against the image (docker-marked)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.dag import build_dag, load_profile, parse_assignments, resolve_hyperparameters
from pipelines.full import build_parser
from tests.docker.test_image import image  # noqa: F401  (the docker tests' image fixture)

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
DIGEST = "sha256:" + "0" * 64


def bash_blocks() -> list[str]:
    """The README's bash blocks, with backslash-continued lines joined."""
    return [re.sub(r"\\\n\s*", " ", block) for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S)]


def commands(prefix: str) -> list[list[str]]:
    """Every documented command line starting with `prefix` (env assignments and comments dropped)."""
    found = []
    for block in bash_blocks():
        for line in block.splitlines():
            line = re.sub(r"(^|\s)\$\([^)]*\)", r"\1", line)  # a bare $(...) expands to flags at run time
            words = shlex.split(line.replace("<digest>", DIGEST[len("sha256:"):]), comments=True)
            while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
                words = words[1:]
            if words[:len(prefix.split())] == prefix.split():
                found.append(words)
    return found


def test_the_two_main_commands_are_documented_and_exist():
    assert "make pipeline" in README and "make test" in README
    for target in ("pipeline", "test"):
        assert subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True).returncode == 0
    dry = subprocess.run(["make", "-n", "pipeline"], cwd=REPO, capture_output=True, text=True).stdout
    assert "-m pipelines.full run" in dry


def test_every_make_target_the_readme_names_exists():
    targets = set(re.findall(r"^make ([a-z-]+)", "\n".join(bash_blocks()), flags=re.M))
    assert {"engine", "image", "pipeline", "test"} <= targets
    for target in targets:
        assert subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True).returncode == 0, target


def test_every_pipeline_command_parses_and_its_settings_validate():
    documented = commands("python -m pipelines.full")
    assert {c[3] for c in documented} == {"run", "compile", "submit"}
    for words in documented:
        args = build_parser().parse_args(words[3:])
        resolve_hyperparameters(load_profile(args.profile), parse_assignments(args.assignments),
                                tasks=build_dag(args.evaluate_split, tune=args.tune).tasks)


def test_documented_compile_commands_write_loadable_yaml(tmp_path):
    from kfp import components

    for words in commands("python -m pipelines.full compile"):
        output = tmp_path / words[words.index("--output") + 1]
        words = [str(output) if w == output.name else w for w in words]
        result = subprocess.run([sys.executable, *words[1:]], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        components.load_component_from_file(str(output))
        output.unlink()


def test_documented_submit_fails_fast_without_a_cluster():
    [words] = commands("python -m pipelines.full submit")
    started = time.monotonic()
    result = subprocess.run([sys.executable, *words[1:]], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "KFP_TOKEN": "dummy"})
    assert result.returncode == 2, result.stderr
    assert "localhost:8080" in result.stderr
    assert time.monotonic() - started < 30


def test_documented_step_commands_parse():
    from contracts import get_contract
    from steps.__main__ import build_parser as step_parser

    documented = commands("python -m steps")
    assert documented
    for words in documented:
        command = words[3]
        if command in ("list", "describe", "validate-contract", "train"):
            continue
        try:
            step_parser(get_contract(command)).parse_args([w for w in words[4:] if w != "..."])
        except SystemExit as stop:  # `--help` exits 0; a bad flag exits 2
            assert stop.code == 0, words


@pytest.mark.docker
def test_documented_docker_commands_run(image, tmp_path):
    runs = commands("docker run")
    assert runs, "the README documents docker run"
    for words in runs:
        if words[-1] == "train":
            continue  # the SageMaker block: test_documented_sagemaker_block_runs
        words = [image if w == "openeds-steps:latest" else w.replace("$PWD/runs", str(tmp_path)) for w in words]
        words = [w.replace("$(id -u):$(id -g)", f"{os.getuid()}:{os.getgid()}") for w in words]
        result = subprocess.run(words, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (words, result.stderr[-2000:])


@pytest.mark.docker
@pytest.mark.slow
def test_documented_sagemaker_block_runs(image, tmp_path):
    [block] = [b for b in bash_blocks() if "hyperparameters.json" in b and " train\n" in b]
    dataset = tmp_path / "default" / "preprocess" / "output" / "data"
    for step, args in (("download-kaggle", ["--source", "synthetic", "--synthetic-train-frames", "4",
                                            "--synthetic-validation-frames", "2", "--synthetic-test-frames", "1"]),
                       ("preprocess", ["--workers", "1", "--channel",
                                       f"raw={tmp_path / 'dl' / 'output' / 'data' / 'raw'}"])):
        root = tmp_path / ("dl" if step == "download-kaggle" else "default/preprocess")
        subprocess.run([sys.executable, "-m", "steps", step, "--root", str(root), *args], check=True,
                       capture_output=True, timeout=600)
    assert (dataset / "train").is_dir()
    script = block.replace("openeds-steps:latest", image).replace("$PWD/runs", str(tmp_path))
    script = script.replace("runs/", f"{tmp_path}/")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "sm" / "model" / "best_efficientvit_model.pt").is_file()
    assert json.loads((tmp_path / "sm" / "model" / "model_card.json").read_text())["model_type"]


def readme_metric_definitions() -> list[dict[str, str]]:
    [block] = [b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S) if b.startswith("METRIC_DEFINITIONS")]
    return [{"Name": name, "Regex": regex} for name, regex in
            re.findall(r'\{"Name": "(\w+)", "Regex": r"([^"]+)"\}', block)]


def test_the_readme_metric_definitions_are_the_code_s():
    from steps.train.metric_lines import METRIC_DEFINITIONS

    assert readme_metric_definitions() == METRIC_DEFINITIONS


@pytest.mark.slow
def test_the_readme_metric_definitions_scrape_a_real_training_log(tmp_path):
    """A real train-seg run's log, read the way SageMaker applies metric_definitions to it."""
    from steps.train.metric_lines import parse_metric_lines
    from tests.steps.train.tiny_data import write_tiny_splits

    splits = write_tiny_splits(tmp_path / "data", train_rows=2, valid_rows=2)
    done = subprocess.run([sys.executable, "-m", "steps", "train-seg", "--root", str(tmp_path / "root"),
                           "--channel", f"train={splits['train']}", "--channel", f"validation={splits['validation']}",
                           "--model", "tiny_efficientvit_micro", "--epochs", "2", "--batch-size", "2",
                           "--device", "cpu", "--no-register-model", "--cpu-threads", "1"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    scraped = parse_metric_lines(done.stdout + done.stderr, readme_metric_definitions())
    history = json.loads((tmp_path / "root" / "output" / "data" / "metrics" / "metrics.json").read_text())
    assert scraped["epoch"] == [1.0, 2.0]
    for name in ("train_loss", "valid_loss", "valid_iou", "iou_pupil", "lr"):
        assert scraped[name] == pytest.approx([row[name] for row in history], rel=1e-5), name


def test_the_onnxruntime_snippet_runs_and_finds_the_pupil(tmp_path):
    """The README's python block, on a known-answer ONNX model and a drawn 320x240 frame."""
    import cv2

    from tests.steps.inference.dark_model import dark_pupil_onnx, eye_frame

    [snippet] = [b for b in re.findall(r"```python\n(.*?)```", README, flags=re.S) if "onnxruntime" in b]
    assert len(snippet.strip().splitlines()) <= 12
    model = dark_pupil_onnx(tmp_path / "dark.onnx")
    cv2.imwrite(str(tmp_path / "eye.png"), eye_frame(320, 240, (150.0, 110.0, 20.0, 14.0, 0.0)))
    code = snippet.replace("runs/default/export-onnx/model/best_efficientvit_model.onnx", str(model))
    result = subprocess.run([sys.executable, "-c", code.replace('"eye.png"', repr(str(tmp_path / "eye.png")))],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    found = re.search(r"Ellipse\(cx=([-\d.e]+), cy=([-\d.e]+)", result.stdout)
    assert found and abs(float(found[1]) - 150) < 1 and abs(float(found[2]) - 110) < 1, result.stdout
