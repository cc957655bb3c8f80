"""pipelines.local: the DAG run as processes (docker mode: tests/docker)."""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from contracts import get_contract
from pipelines import local
from pipelines.dag import build_dag, load_profile, resolve_hyperparameters
from pipelines.full import build_parser


def make_plan(tmp_path: Path, profile: str = "smoke", env: dict | None = None, tune: bool = False) -> local.RunPlan:
    dag = build_dag(tune=tune)
    return local.RunPlan(dag=dag, work_dir=tmp_path, hyperparameters=resolve_hyperparameters(
        load_profile(profile), tasks=dag.tasks), env=env if env is not None else local.base_environment(tmp_path))


def run_args(work_dir: Path, *assignments: str, profile: str = "smoke", resume: bool = False) -> Namespace:
    """`python -m pipelines.full run` arguments, parsed by the real command line."""
    words = ["run", "--profile", profile, "--work-dir", str(work_dir)]
    words += [f"--set={assignment}" for assignment in assignments] + (["--resume"] if resume else [])
    return build_parser().parse_args(words)


def test_tune_branch_feeds_train_seg_its_study_folder(tmp_path):
    plan = make_plan(tmp_path, tune=True)
    assert plan.channels("train-seg")["tuned"] == tmp_path / "tune" / "output" / "data" / "study"
    assert plan.channels("tune") == {split: tmp_path / "preprocess" / "output" / "data" / split
                                     for split in ("train", "validation")}
    assert "tuned" not in make_plan(tmp_path).channels("train-seg")


def finish(plan: local.RunPlan, task: str) -> None:
    """Leave a root as a finished run of `task` under `plan` would (config, record, manifests)."""
    local.write_task_config(plan, task)
    (plan.root(task) / "output").mkdir(parents=True, exist_ok=True)
    (plan.root(task) / "output" / "manifest.json").write_text("{}")
    for output in get_contract(task).outputs:
        plan.output_dir(task, output.name).mkdir(parents=True, exist_ok=True)
        (plan.output_dir(task, output.name) / "_manifest.json").write_text("{}")


def test_resume_reuses_only_runs_with_the_same_settings_wiring_and_upstream(tmp_path):
    plan = make_plan(tmp_path)
    assert local.resume_action(plan, "train-seg", upstream_reused=True) == "fresh"  # never ran
    finish(plan, "train-seg")
    assert local.resume_action(plan, "train-seg", upstream_reused=True) == "reuse"
    # preprocess ran again: the finished model was trained on other data
    assert local.resume_action(plan, "train-seg", upstream_reused=False) == "fresh"
    # the tune branch now feeds train-seg: same settings, other wiring
    assert local.resume_action(make_plan(tmp_path, tune=True), "train-seg", upstream_reused=True) == "fresh"
    changed = make_plan(tmp_path)
    changed.hyperparameters["train-seg"]["epochs"] = 3
    assert local.resume_action(changed, "train-seg", upstream_reused=True) == "fresh"
    # an interrupted run with the same settings continues in its root (its checkpoints)
    (plan.root("train-seg") / "output" / "manifest.json").unlink()
    assert local.resume_action(plan, "train-seg", upstream_reused=True) == "continue"
    (plan.root("train-seg") / "output" / "failure").write_text("interrupted")
    assert local.resume_action(plan, "train-seg", upstream_reused=True) == "continue"


def test_resume_keys_a_task_on_its_upstream_content_and_code(tmp_path):
    plan = make_plan(tmp_path)
    finish(plan, "download-kaggle")
    finish(plan, "preprocess")
    assert local.resume_action(plan, "preprocess", upstream_reused=True) == "reuse"
    # the upstream output was rewritten with other content (a manual rerun, a copied folder)
    (plan.output_dir("download-kaggle", "raw") / "_manifest.json").write_text('{"files": ["other"]}')
    assert local.resume_action(plan, "preprocess", upstream_reused=True) == "fresh"
    finish(plan, "preprocess")
    assert local.resume_action(plan, "preprocess", upstream_reused=True) == "reuse"
    # the same settings under other code (an edited checkout, a rebuilt image)
    other_code = local.RunPlan(dag=plan.dag, work_dir=plan.work_dir, hyperparameters=plan.hyperparameters,
                               env=plan.env, code_version="source sha256:0000")
    assert local.resume_action(other_code, "preprocess", upstream_reused=True) == "fresh"


def test_code_version_follows_the_source(tmp_path):
    for package in local.SOURCE_PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "a.py").write_text("x = 1\n")
    before = local.source_digest(tmp_path)
    assert local.source_digest(tmp_path) == before
    (tmp_path / "steps" / "a.py").write_text("x = 2\n")
    assert local.source_digest(tmp_path) != before
    assert local.ProcessRunner().code_version() == f"source sha256:{local.source_digest(local.PROJECT_ROOT)}"


def test_channels_are_the_upstream_output_folders(tmp_path):
    plan = make_plan(tmp_path)
    assert plan.channels("validate") == {
        "onnx": tmp_path / "export-onnx" / "model",
        "seg_model": tmp_path / "train-seg" / "model",
        "ellipse_model": tmp_path / "train-ellipse" / "model",
        "test": tmp_path / "preprocess" / "output" / "data" / "validation",
        "seg_metrics": tmp_path / "train-seg" / "output" / "data" / "metrics",
    }
    assert plan.channels("download-kaggle") == {}


def test_process_command_passes_channels_and_outputs_as_overrides(tmp_path):
    command = local.ProcessRunner().command(make_plan(tmp_path), "export-onnx")
    assert command[1:5] == ["-m", "steps", "export-onnx", "--root"]
    assert f"seg_model={tmp_path / 'train-seg' / 'model'}" in command
    assert f"ellipse_model={tmp_path / 'train-ellipse' / 'model'}" in command
    assert f"onnx={tmp_path / 'export-onnx' / 'model'}" in command


def test_process_environment_drops_sagemaker_variables(tmp_path):
    plan = make_plan(tmp_path, env={"SM_MODEL_DIR": "/elsewhere", "SAGEMAKER_BASE_DIR": "/x", "PATH": "/bin"})
    assert local.ProcessRunner().environment(plan) == {"PATH": "/bin"}


def test_docker_command_mounts_the_sagemaker_layout_and_passes_secrets_by_name(tmp_path):
    env = {**local.base_environment(tmp_path), "KAGGLE_KEY": "canary-7f3a", "OPENEDS_EPOCHS": "2"}
    plan = make_plan(tmp_path, env=env)
    command = local.DockerRunner("openeds-steps:test").command(plan, "train-seg")
    joined = " ".join(command)
    assert f"{tmp_path / 'train-seg'}:/opt/ml" in joined
    assert f"{tmp_path / 'preprocess' / 'output' / 'data' / 'train'}:/opt/ml/input/data/train:ro" in joined
    assert command[-2:] == ["openeds-steps:test", "train-seg"]
    assert "canary-7f3a" not in joined
    for name in ("KAGGLE_KEY", "OPENEDS_EPOCHS", "MLFLOW_TRACKING_URI"):
        assert command[command.index(name) - 1] == "-e"
    mlflow_dir = str(tmp_path / "mlflow")
    assert f"{mlflow_dir}:{mlflow_dir}" in command


def test_mlflow_defaults_to_a_sqlite_store_in_the_work_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert local.base_environment(tmp_path)["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert local.base_environment(tmp_path)["MLFLOW_TRACKING_URI"] == "http://mlflow.example:5000"


def test_a_failed_step_stops_its_dependents_and_its_failure_is_shown(tmp_path):
    """download-kaggle with source=local and no source folder fails for real; nothing else can run."""
    out = io.StringIO()
    code = local.run_from_args(run_args(tmp_path, "download-kaggle.source=local"), out=out)
    text = out.getvalue()
    assert code == 1
    assert "download-kaggle: FAILED" in text
    failure = (tmp_path / "download-kaggle" / "output" / "failure").read_text()
    assert failure.splitlines()[0] in text
    for task in ("preprocess", "push-hf", "train-seg", "train-ellipse", "export-onnx", "validate"):
        assert f"== {task}: skipped" in text
        assert not (tmp_path / task).exists()
    assert "validation report" not in text


def test_ctrl_c_stops_the_running_step_and_the_run(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    runner = subprocess.Popen(
        [sys.executable, "-m", "pipelines.full", "run", "--profile", "smoke", "--work-dir", str(tmp_path),
         "--set", "download-kaggle.synthetic_train_frames=20000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).resolve().parents[2])
    seen = []
    for line in runner.stdout:  # until the step itself has started and logged
        seen.append(line)
        if line.startswith("[download-kaggle]"):
            break
    started = time.monotonic()
    runner.send_signal(signal.SIGINT)
    output, _ = runner.communicate(timeout=120)
    output = "".join(seen) + output
    assert time.monotonic() - started < 30
    assert runner.returncode == 130, output[-3000:]
    assert "download-kaggle  interrupted" in output
    assert "preprocess       skipped" in output and "Traceback" not in output
    assert "step download-kaggle: root" in (tmp_path / "logs" / "download-kaggle.log").read_text()
    assert not (tmp_path / "download-kaggle" / "output" / "data" / "raw").exists()


class TimedRunner(local.ProcessRunner):
    """Each task is a real process that logs when it starts and ends and sleeps in between (the
    trainings longest): the scheduler's work, without the steps' own minutes."""

    def command(self, plan: local.RunPlan, task: str) -> list[str]:
        seconds = 1.2 if task.startswith("train") else 0.3
        return [sys.executable, "-c", f"import time; print('start', time.time(), flush=True); "
                                      f"time.sleep({seconds}); print('end', time.time())"]


def intervals(plan: local.RunPlan) -> dict[str, tuple[float, float]]:
    found = {}
    for task in plan.dag.tasks:
        words = dict(line.split() for line in plan.log_file(task).read_text().splitlines())
        found[task] = (float(words["start"]), float(words["end"]))
    return found


@pytest.mark.parametrize("jobs", [1, 3])
def test_tasks_run_at_once_when_jobs_allow_and_never_before_their_upstream(tmp_path, jobs):
    plan = dataclasses.replace(make_plan(tmp_path), jobs=jobs)
    results = local.run_dag(plan, TimedRunner(), out=io.StringIO())
    assert [r.status for r in results] == ["ok"] * len(results)
    spans = intervals(plan)
    for task in plan.dag.tasks:
        for upstream in plan.dag.upstream(task):
            assert spans[task][0] >= spans[upstream][1], (task, upstream)
    ordered = sorted(spans.values())
    overlapping = any(later[0] < earlier[1] for earlier, later in zip(ordered, ordered[1:]))
    seg, ellipse = spans["train-seg"], spans["train-ellipse"]
    if jobs == 1:
        assert not overlapping
    else:  # the two trainings only need preprocess: they run together (one after the other, never)
        assert seg[0] < ellipse[1] and ellipse[0] < seg[1]


def test_invalid_settings_stop_before_any_step(tmp_path):
    from pipelines.dag import DagError

    with pytest.raises(DagError, match="epochs"):
        local.run_from_args(run_args(tmp_path, "train-seg.epochs=0"), out=io.StringIO())
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_the_whole_pipeline_runs_as_processes_and_resumes(tmp_path):
    out = io.StringIO()
    assert local.run_from_args(run_args(tmp_path), out=out) == 0, out.getvalue()[-5000:]
    text = out.getvalue()
    report = local.report_location(make_plan(tmp_path))
    assert f"validation report: {report}" in text and report.exists()
    for task in build_dag().tasks:
        assert json.loads((tmp_path / task / "output" / "manifest.json").read_text())["step"] == task
        assert f"{task:16s} ok " in text
    written = json.loads((tmp_path / "train-seg" / "input" / "config" / "hyperparameters.json").read_text())
    assert written == load_profile("smoke")["train-seg"]
    assert (tmp_path / "mlflow" / "mlflow.db").is_file()
    # Same settings: everything is reused; a changed gate reruns validate alone.
    out = io.StringIO()
    assert local.run_from_args(run_args(tmp_path, "validate.overlays=0", resume=True), out=out) == 0
    text = out.getvalue()
    assert "== validate: running" in text
    assert all(f"== {task}: reused" in text for task in build_dag().tasks if task != "validate")
