"""One SageMaker local-mode training job, run by a SageMaker SDK's own python (v2 or v3 venv).

    SDK_PYTHON tests/sagemaker/sdk_job.py --image IMAGE --work DIR --hosts N \
        --hyperparameters JSON --channel train=PATH --channel validation=PATH [--entry-point]

v2: `Estimator(instance_type="local")`; `--entry-point` adds an entry point script, which makes the
SDK json.dumps every hyperparameter (strings arrive as "\"abc\""). v3: `ModelTrainer` in
LOCAL_CONTAINER mode. Each job gets its own container root, so its own compose project (v3's
default root is the working directory: jobs started from one folder share a project and its old
containers). The container's log streams to stdout; the artifacts end up under DIR/output.

The exit status is 0 when the SDK reported success and every container of the job exited 0, 1 when
the SDK reported failure, 3 when it reported success for a job a container of which failed: Debian's
docker-compose 1.29 computes `up --abort-on-container-exit`'s status from a snapshot that can
still show the container running, then returns 0 (seen once in CI with v3), while the SageMaker
service fails a job whose container exits non-zero. Imports nothing of the project.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROLE = "arn:aws:iam::111111111111:role/dummy"
COMPOSE_DIR_LABEL = "com.docker.compose.project.working_dir"


def offline_environment(work: Path) -> None:
    """Region, dummy credentials, telemetry opted out by the SDK's documented defaults config."""
    config = work / "sagemaker-defaults.yaml"
    config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    os.environ.update({"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "dummy",
                       "AWS_SECRET_ACCESS_KEY": "dummy", "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config)})


def run_v2(args: argparse.Namespace, channels: dict[str, str], output: Path) -> None:
    from sagemaker.estimator import Estimator
    from sagemaker.local import LocalSession

    session = LocalSession()
    root = args.work / "v2-root"  # v2 makes a fresh temporary folder in it per job
    root.mkdir(exist_ok=True)
    session.config = {"local": {"local_code": True, "container_root": str(root)}}
    code = {}
    if args.entry_point:
        source = args.work / "code"
        source.mkdir(exist_ok=True)
        (source / "noop.py").write_text("# never run: the image's `train` ignores sagemaker_program\n")
        code = {"entry_point": "noop.py", "source_dir": str(source)}
    estimator = Estimator(image_uri=args.image, role=ROLE, instance_type="local", instance_count=args.hosts,
                          output_path=f"file://{output}", sagemaker_session=session,
                          hyperparameters=args.hyperparameters, **code)
    estimator.fit({name: f"file://{path}" for name, path in channels.items()})


def run_v3(args: argparse.Namespace, channels: dict[str, str], output: Path) -> None:
    from sagemaker.core.training.configs import Compute, InputData
    from sagemaker.train import ModelTrainer
    from sagemaker.train.model_trainer import Mode

    root = Path(tempfile.mkdtemp(prefix="v3-", dir=args.work))
    trainer = ModelTrainer(training_mode=Mode.LOCAL_CONTAINER, training_image=args.image, role=ROLE,
                           compute=Compute(instance_type="local", instance_count=args.hosts),
                           hyperparameters=args.hyperparameters, local_container_root=str(root))
    try:
        trainer.train(input_data_config=[InputData(channel_name=name, data_source=path)
                                         for name, path in channels.items()], wait=True)
    finally:  # v3 leaves the archives in its container root; put them where v2 puts its own
        for archive in (root / "compressed_artifacts").glob("*.tar.gz"):
            shutil.copy2(archive, output / archive.name)


def job_containers(work: Path) -> list[str]:
    """The IDs of the containers of compose projects under `work` (this job's)."""
    listed = subprocess.run(["docker", "ps", "-a", "--filter", f"label={COMPOSE_DIR_LABEL}",
                             "--format", f"{{{{.ID}}}} {{{{.Label \"{COMPOSE_DIR_LABEL}\"}}}}"],
                            capture_output=True, text=True, check=True).stdout.split("\n")
    return [line.split(" ", 1)[0] for line in listed
            if " " in line and Path(line.split(" ", 1)[1]).is_relative_to(work)]


def failed_containers(ours: list[str]) -> list[str]:
    """'NAME exited CODE' for each of the job's containers that did not exit 0."""
    if not ours:
        return ["no container of the job found"]
    states = subprocess.run(["docker", "inspect", "--format", "{{.Name}} {{.State.Status}} {{.State.ExitCode}}",
                             *ours], capture_output=True, text=True, check=True).stdout.split()
    triples = zip(states[0::3], states[1::3], states[2::3])
    return [f"container {name.lstrip('/')} {status}, exit code {code}" for name, status, code in triples
            if status != "exited" or code != "0"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--hosts", type=int, default=1)
    parser.add_argument("--hyperparameters", type=json.loads, default={})
    parser.add_argument("--channel", action="append", default=[])
    parser.add_argument("--entry-point", action="store_true")
    args = parser.parse_args()
    args.work = args.work.resolve()  # compose reads a relative volume as a named one
    args.work.mkdir(parents=True, exist_ok=True)
    offline_environment(args.work)
    channels = dict(pair.split("=", 1) for pair in args.channel)
    output = args.work / "output"
    output.mkdir(exist_ok=True)
    from importlib.metadata import version

    sdk = version("sagemaker")
    major = int(sdk.split(".")[0])
    print(f"[sdk_job] sagemaker {sdk}, {args.hosts} host(s)", flush=True)
    started = time.monotonic()
    sdk_succeeded = True
    try:
        (run_v2 if major < 3 else run_v3)(args, channels, output)
    except Exception as error:  # noqa: BLE001 - the SDK's failure is the test's evidence
        print(f"[sdk_job] SDK reported failure: {type(error).__name__}: {error}", flush=True)
        sdk_succeeded = False
    print(f"[sdk_job] job took {time.monotonic() - started:.1f}s", flush=True)
    ours = job_containers(args.work)
    failed = failed_containers(ours)
    if ours:  # the SDKs leave the stopped algo-N containers behind: one per job, they pile up
        subprocess.run(["docker", "rm", "-f", *ours], capture_output=True, check=False)
    if failed:
        print(f"[sdk_job] failed: {'; '.join(failed)}", flush=True)
    if not sdk_succeeded:
        return 1
    return 3 if failed else 0

if __name__ == "__main__":
    sys.exit(main())
