"""Run the pipeline's DAG on this machine: each step as a process or as a `docker run`.

Every task gets its own /opt/ml-style root, `<work-dir>/<task>/`, with its hyperparameters in
`input/config/hyperparameters.json`. Artifacts are wired exactly as the KFP pipeline wires them
(`pipelines.dag`): in process mode an upstream output folder is passed as a `--channel NAME=PATH`
override; in docker mode it is bind-mounted read-only at `/opt/ml/input/data/<channel>` with the
task root at `/opt/ml`, the SageMaker layout. A failed step stops the tasks that depend on it;
independent tasks still run. Without MLFLOW_TRACKING_URI, runs are tracked in
`<work-dir>/mlflow/mlflow.db` (sqlite). Up to `--jobs` tasks run at once, each as soon as its
upstream tasks have finished (train-seg, train-ellipse and push-hf only need preprocess), as KFP
runs them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from contracts import get_contract
from pipelines.dag import Dag, build_dag, load_profile, parse_assignments, resolve_hyperparameters

DEFAULT_WORK_DIR = Path("runs/default")
DEFAULT_LOCAL_IMAGE = os.environ.get("OPENEDS_IMAGE", "openeds-steps:latest")
CONTAINER_ROOT = "/opt/ml"
# Passed into containers by name only (`-e NAME`): values never appear on a command line.
PASSED_ENV = ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_ENVIRONMENT", "HF_TOKEN", "HF_HUB_OFFLINE",
              "HF_ENDPOINT", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
              "MLFLOW_TRACKING_TOKEN", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME",
              "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "WANDB_API_KEY", "WANDB_MODE",
              "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
# Variables that would move a step's outputs away from the wiring (SageMaker's own).
SCRUBBED_ENV_PREFIXES = ("SM_", "SAGEMAKER_")
STOP_GRACE_S = 60  # a training step saves a checkpoint when stopped
# Beside hyperparameters.json: the settings and channel wiring a task ran with (for --resume).
TASK_RECORD = "pipeline_task.json"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
SOURCE_PACKAGES = ("contracts", "steps", "pipelines")


@dataclass
class TaskResult:
    task: str
    status: str  # ok | failed | skipped | reused | interrupted
    seconds: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class RunPlan:
    """Everything a runner needs to start one task."""

    dag: Dag
    work_dir: Path
    hyperparameters: Mapping[str, Mapping[str, Any]]
    env: Mapping[str, str]
    code_version: str = ""  # the runner's code_version(): a finished task of other code is not reused
    jobs: int = 1  # tasks run at once

    def root(self, task: str) -> Path:
        return self.work_dir / task

    def output_dir(self, task: str, output: str) -> Path:
        return self.root(task) / get_contract(task).output(output).path

    def channels(self, task: str) -> dict[str, Path]:
        """Channel name -> the upstream output folder that feeds it."""
        return {channel: self.output_dir(edge.source_task, edge.source_output)
                for channel, edge in self.dag.inputs_of(task).items()}

    @property
    def mlflow_dir(self) -> Path:
        return self.work_dir / "mlflow"

    def log_file(self, task: str) -> Path:
        return self.work_dir / "logs" / f"{task}.log"


class ProcessRunner:
    """`python -m steps TASK --root <work-dir>/TASK --channel ... --output ...` in this venv."""

    mode = "process"

    def command(self, plan: RunPlan, task: str) -> list[str]:
        command = [sys.executable, "-m", "steps", task, "--root", str(plan.root(task))]
        for channel, path in plan.channels(task).items():
            command += ["--channel", f"{channel}={path}"]
        for output in get_contract(task).outputs:
            command += ["--output", f"{output.name}={plan.output_dir(task, output.name)}"]
        return command

    def environment(self, plan: RunPlan) -> dict[str, str]:
        return {k: v for k, v in plan.env.items() if not k.startswith(SCRUBBED_ENV_PREFIXES)}

    def prepare(self, plan: RunPlan, task: str) -> None:
        return None

    def code_version(self) -> str:
        """The code a task runs: a digest of this checkout's contracts, steps and pipelines."""
        return f"source sha256:{source_digest(PROJECT_ROOT)}"


class DockerRunner(ProcessRunner):
    """`docker run IMAGE TASK` with the task root at /opt/ml and upstream outputs mounted in."""

    mode = "docker"

    def __init__(self, image: str, docker: str = "docker"):
        self.image = image
        self.docker = docker

    def user_args(self) -> list[str]:
        # A non-root host user keeps owning what the step writes; as root, the image's own
        # non-root user runs the step in folders made writable for it (prepare()).
        return [] if os.getuid() == 0 else ["--user", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/tmp"]

    def command(self, plan: RunPlan, task: str) -> list[str]:
        mlflow_dir = str(plan.mlflow_dir.resolve())
        command = [self.docker, "run", "--rm", "--name", f"openeds-{task}-{os.getpid()}",
                   *self.user_args(), "-v", f"{plan.root(task).resolve()}:{CONTAINER_ROOT}",
                   "-v", f"{mlflow_dir}:{mlflow_dir}", "-w", mlflow_dir, "--shm-size", "1g"]
        for channel, path in plan.channels(task).items():
            command += ["-v", f"{path.resolve()}:{CONTAINER_ROOT}/input/data/{channel}:ro"]
        for folder in self.host_folders(plan, task):  # named by a setting: visible at the same path inside
            command += ["-v", f"{folder}:{folder}:ro"]
        for name in sorted(self.passed_env(plan)):
            command += ["-e", name]
        return [*command, self.image, task]

    def host_folders(self, plan: RunPlan, task: str) -> list[str]:
        """Host folders the task's settings name by path (validate's real frames, `fixtures_dir`)."""
        if "fixtures_dir" not in get_contract(task).hyperparameters.model_fields:
            return []
        named = plan.hyperparameters[task].get("fixtures_dir") or plan.env.get("OPENEDS_FIXTURES_DIR")
        return [str(Path(named).resolve())] if named and Path(named).is_dir() else []

    def passed_env(self, plan: RunPlan) -> set[str]:
        names = {name for name in PASSED_ENV if name in plan.env}
        names |= {name for name in plan.env if name.startswith("OPENEDS_")}
        return names | ({"MLFLOW_TRACKING_URI"} if "MLFLOW_TRACKING_URI" in plan.env else set())

    def code_version(self) -> str:
        """The image's ID (its content digest): a rebuilt image is other code."""
        done = subprocess.run([self.docker, "image", "inspect", "--format", "{{.Id}}", self.image],
                              capture_output=True, text=True)
        return f"image {done.stdout.strip()}" if done.returncode == 0 else f"image {self.image} (not inspectable)"

    def prepare(self, plan: RunPlan, task: str) -> None:
        if os.getuid() == 0:
            for folder in (plan.root(task), plan.mlflow_dir):
                folder.chmod(0o777)


def source_digest(root: Path) -> str:
    """sha256 over the project's code and profiles (paths and bytes), in a stable order."""
    digest = hashlib.sha256()
    for package in SOURCE_PACKAGES:
        for path in sorted((root / package).rglob("*")):
            if path.suffix in (".py", ".yaml") and path.is_file():
                digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def manifest_digest(folder: Path) -> str | None:
    """sha256 of an output's manifest, which lists every file's hash: its content, in one value."""
    manifest = folder / "_manifest.json"
    return hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None


def task_record(plan: RunPlan, task: str) -> dict[str, Any]:
    """What a task run depends on: its settings, its wiring, its upstream outputs' content and the
    code that runs it. --resume reuses a finished task only when all of them are the same."""
    return {"hyperparameters": dict(plan.hyperparameters[task]),
            "channels": {channel: f"{edge.source_task}.{edge.source_output}"
                         for channel, edge in sorted(plan.dag.inputs_of(task).items())},
            "upstream": {channel: manifest_digest(path) for channel, path in sorted(plan.channels(task).items())},
            "code": plan.code_version}


def record_file(plan: RunPlan, task: str) -> Path:
    return plan.root(task) / "input" / "config" / TASK_RECORD


def write_task_config(plan: RunPlan, task: str) -> Path:
    path = plan.root(task) / "input" / "config" / "hyperparameters.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan.hyperparameters[task], indent=2, sort_keys=True) + "\n", encoding="utf-8")
    record_file(plan, task).write_text(json.dumps(task_record(plan, task), indent=2, sort_keys=True) + "\n",
                                       encoding="utf-8")
    return path


def finished(plan: RunPlan, task: str) -> bool:
    root = plan.root(task)
    if not (root / "output" / "manifest.json").is_file() or (root / "output" / "failure").exists():
        return False
    return all((plan.output_dir(task, o.name) / "_manifest.json").is_file() for o in get_contract(task).outputs)


def resume_action(plan: RunPlan, task: str, upstream_reused: bool) -> str:
    """--resume: 'reuse' a run that finished with the same settings, wiring and upstream outputs;
    'continue' an unfinished one in its root (training resumes from its checkpoints); else 'fresh'
    (a finished run whose inputs changed must not hand its checkpoints or study to the new run)."""
    path = record_file(plan, task)
    try:
        same = json.loads(path.read_text(encoding="utf-8")) == json.loads(json.dumps(task_record(plan, task)))
    except (OSError, ValueError):
        same = False
    if not same or not upstream_reused:
        return "fresh"
    return "reuse" if finished(plan, task) else "continue"


def stream(process: subprocess.Popen, task: str, log: TextIO, out: TextIO) -> None:
    for line in process.stdout:  # type: ignore[union-attr]
        log.write(line)
        log.flush()  # `tail -f <work-dir>/logs/<task>.log` follows the step live
        out.write(f"[{task}] {line}")
        out.flush()


@dataclass
class RunningSteps:
    """The step processes now running, so that Ctrl-C can stop every one of them."""

    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, task: str, process: subprocess.Popen) -> None:
        with self.lock:
            self.processes[task] = process

    def remove(self, task: str) -> None:
        with self.lock:
            self.processes.pop(task, None)

    def stop_all(self) -> None:
        """SIGTERM every step (training saves a checkpoint and exits), kill those that linger."""
        with self.lock:
            processes = list(self.processes.values())
        for process in processes:
            process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for process in processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                process.kill()
                process.wait()


def run_task(plan: RunPlan, runner: ProcessRunner, task: str, out: TextIO,
             running: RunningSteps | None = None) -> TaskResult:
    root = plan.root(task)
    root.mkdir(parents=True, exist_ok=True)
    write_task_config(plan, task)
    runner.prepare(plan, task)
    plan.log_file(task).parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(plan.log_file(task), "w", encoding="utf-8") as log:
        process = subprocess.Popen(runner.command(plan, task), env=runner.environment(plan),
                                   cwd=plan.mlflow_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, errors="replace")
        if running is not None:
            running.add(task, process)
        try:
            stream(process, task, log, out)
            code = process.wait()
        finally:
            if running is not None:
                running.remove(task)
    seconds = time.monotonic() - started
    if code == 0:
        return TaskResult(task, "ok", seconds)
    return TaskResult(task, "failed", seconds, failure_reason(plan, task, code))


def failure_reason(plan: RunPlan, task: str, code: int) -> str:
    failure = plan.root(task) / "output" / "failure"
    if failure.is_file():
        return failure.read_text(encoding="utf-8", errors="replace").strip()
    tail = plan.log_file(task).read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
    return f"exit code {code} and no failure file; last log lines:\n" + "\n".join(tail)


def settle(plan: RunPlan, runner: ProcessRunner, task: str, results: Mapping[str, TaskResult], resume: bool,
           out: TextIO) -> TaskResult | None:
    """A task whose upstream has finished: its result when it need not run (an upstream task did not
    finish: skipped; --resume found it done: reused); None when it must run (its root made ready)."""
    upstream = plan.dag.upstream(task)
    blocked = [name for name in upstream if results[name].status in ("failed", "skipped", "interrupted")]
    if blocked:
        print(f"== {task}: skipped (upstream {', '.join(blocked)} did not finish)", file=out)
        return TaskResult(task, "skipped", reason=f"upstream {', '.join(blocked)} did not finish")
    action = resume_action(plan, task, all(results[n].status == "reused" for n in upstream)) if resume else "fresh"
    if action == "reuse":
        print(f"== {task}: reused (completed earlier with the same settings)", file=out)
        return TaskResult(task, "reused", reason="completed earlier with the same settings")
    if action == "fresh" and plan.root(task).exists():
        shutil.rmtree(plan.root(task))
    print(f"== {task}: running ({runner.mode}, root {plan.root(task)})", file=out, flush=True)
    return None


def run_dag(plan: RunPlan, runner: ProcessRunner, resume: bool = False,
            out: TextIO = sys.stdout) -> list[TaskResult]:
    """Run every task, up to `plan.jobs` at once, each once its upstream tasks are done; dependents of a
    failed task are skipped, the rest still run. Ctrl-C stops the running steps and starts no more."""
    results: dict[str, TaskResult] = {}
    plan.mlflow_dir.mkdir(parents=True, exist_ok=True)
    pending = list(plan.dag.order())
    started: dict[Future[TaskResult], str] = {}
    running = RunningSteps()
    with ThreadPoolExecutor(max_workers=max(1, plan.jobs)) as pool:
        try:
            while pending or started:
                for task in [t for t in pending if all(u in results for u in plan.dag.upstream(t))]:
                    if len(started) >= max(1, plan.jobs):
                        break
                    pending.remove(task)
                    settled = settle(plan, runner, task, results, resume, out)
                    if settled is not None:
                        results[task] = settled
                    else:
                        started[pool.submit(run_task, plan, runner, task, out, running)] = task
                if started:
                    for future in wait(started, return_when=FIRST_COMPLETED).done:
                        finish_task(results, started.pop(future), future.result(), out)
        except KeyboardInterrupt:
            running.stop_all()
            for future, task in started.items():
                result = future.result()
                results[task] = result if result.status == "ok" else TaskResult(
                    task, "interrupted", result.seconds,
                    "interrupted (Ctrl-C); rerun with --resume to continue from its checkpoints")
    for task in pending:
        results[task] = TaskResult(task, "skipped", reason="not started: the run was interrupted")
    return [results[task] for task in plan.dag.order()]


def finish_task(results: dict[str, TaskResult], task: str, result: TaskResult, out: TextIO) -> None:
    results[task] = result
    if result.status == "failed":
        print(f"== {task}: FAILED\n{indent(result.reason)}", file=out, flush=True)


def indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines())


def format_table(results: Sequence[TaskResult], plan: RunPlan, wall_seconds: float | None = None) -> str:
    """One line per task; the total is the wall-clock time when given (tasks overlap), and the
    tasks' own seconds summed."""
    lines = [f"{'task':16s} {'status':11s} {'seconds':>8s}  root / reason", "-" * 76]
    for result in results:
        detail = result.reason.splitlines()[0] if result.status != "ok" and result.reason else str(plan.root(result.task))
        lines.append(f"{result.task:16s} {result.status:11s} {result.seconds:8.1f}  {detail}")
    summed = sum(r.seconds for r in results)
    if wall_seconds is None:
        lines.append(f"{'total':16s} {'':11s} {summed:8.1f}")
    else:
        lines.append(f"{'total':16s} {'':11s} {wall_seconds:8.1f}  wall clock ({summed:.1f} s of steps, up to "
                     f"{plan.jobs} at once)")
    return "\n".join(lines)


def report_location(plan: RunPlan) -> Path:
    folder = plan.output_dir("validate", "report")
    for name in ("report.md", "report.json"):
        if (folder / name).is_file():
            return folder / name
    return folder


def base_environment(work_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    if not env.get("MLFLOW_TRACKING_URI"):
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{(work_dir / 'mlflow' / 'mlflow.db').resolve()}"
    return env


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=("process", "docker"), default="process",
                        help="each step as a process in this venv (default) or a `docker run` of the image")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR,
                        help=f"one /opt/ml-style root per task under it (default: {DEFAULT_WORK_DIR})")
    parser.add_argument("--jobs", type=positive_int, default=default_jobs(),
                        help="tasks run at once, each as soon as its upstream tasks are done (default: this "
                             f"machine's CPUs, {default_jobs()}; the local profile trains on one thread per "
                             "step, so train-seg and train-ellipse share two cores)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse tasks finished with the same settings, wiring, upstream outputs and code; "
                             "continue unfinished ones in their roots (training resumes from checkpoints); "
                             "run the rest from scratch")


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def run_from_args(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    dag = build_dag(args.evaluate_split, tune=args.tune)
    hyperparameters = resolve_hyperparameters(load_profile(args.profile), parse_assignments(args.assignments),
                                              tasks=dag.tasks)
    work_dir = args.work_dir.absolute()
    runner = DockerRunner(args.image or DEFAULT_LOCAL_IMAGE) if args.mode == "docker" else ProcessRunner()
    plan = RunPlan(dag=dag, work_dir=work_dir, hyperparameters=hyperparameters, env=base_environment(work_dir),
                   code_version=runner.code_version(), jobs=args.jobs)
    print(f"pipeline: {len(plan.dag.tasks)} tasks, mode {runner.mode}, up to {plan.jobs} at once, work dir "
          f"{work_dir}, MLflow {plan.env['MLFLOW_TRACKING_URI'].split('@')[-1]}", file=out, flush=True)
    started = time.monotonic()
    results = run_dag(plan, runner, resume=args.resume, out=out)
    print("\n" + format_table(results, plan, time.monotonic() - started), file=out)
    if any(r.status == "interrupted" for r in results):
        print("\ninterrupted; rerun with --resume to reuse finished tasks", file=out)
        return 130
    failed = [r for r in results if r.status in ("failed", "skipped")]
    if failed:
        for result in (r for r in results if r.status == "failed"):
            print(f"\n{result.task} failed; failure file {plan.root(result.task) / 'output' / 'failure'}:\n"
                  f"{indent(result.reason)}", file=out)
        return 1
    print(f"\nvalidation report: {report_location(plan)}", file=out)
    return 0
