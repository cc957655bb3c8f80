"""One SageMaker local-mode training job, run by a SageMaker SDK's own python (v2 or v3 venv).

    SDK_PYTHON tests/sagemaker/sdk_job.py --image IMAGE --work DIR --hosts N \
        --hyperparameters JSON --channel train=PATH --channel validation=PATH [--entry-point]

v2: `Estimator(instance_type="local")`; `--entry-point` adds an entry point script, which makes the
SDK json.dumps every hyperparameter (strings arrive as "\"abc\""). v3: `ModelTrainer` in
LOCAL_CONTAINER mode. The container's log streams to stdout; the artifacts end up under
DIR/output; the exit status is 0 when the SDK reported success. Imports nothing of the project.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROLE = "arn:aws:iam::111111111111:role/dummy"


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
    session.config = {"local": {"local_code": True}}
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

    root = args.work / "v3-root"
    root.mkdir(exist_ok=True)
    trainer = ModelTrainer(training_mode=Mode.LOCAL_CONTAINER, training_image=args.image, role=ROLE,
                           compute=Compute(instance_type="local", instance_count=args.hosts),
                           hyperparameters=args.hyperparameters, local_container_root=str(root))
    try:
        trainer.train(input_data_config=[InputData(channel_name=name, data_source=path)
                                         for name, path in channels.items()], wait=True)
    finally:  # v3 leaves the archives in its container root; put them where v2 puts its own
        for archive in (root / "compressed_artifacts").glob("*.tar.gz"):
            shutil.copy2(archive, output / archive.name)


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
    try:
        (run_v2 if major < 3 else run_v3)(args, channels, output)
    except Exception as error:  # noqa: BLE001 - the SDK's failure is the test's evidence
        print(f"[sdk_job] SDK reported failure: {type(error).__name__}: {error}", flush=True)
        return 1
    finally:
        print(f"[sdk_job] job took {time.monotonic() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
