"""Entrypoint of the image: which command a `docker run IMAGE ARGS...` runs, and as whom.

    STEP [flags]           python -m steps STEP [flags]   (download-kaggle, preprocess, ... validate)
    train                  python -m steps train          (SageMaker; the step comes from the `step`
                                                           hyperparameter or OPENEDS_STEP)
    (nothing)              `train` when SageMaker started the container (its config files or SM_*
                           variables; SDK v3's ModelTrainer passes no command), else this help
    list | describe | validate-contract ...               python -m steps ...
    kfp STEP ...           python -m pipelines.launch STEP ...   (what the KFP components run)
    sh | bash | python ... that command as is

As PID 1 (a plain `docker run`), the kernel ignores signals a process has no handler for, so
`docker stop` would wait and then SIGKILL. Here PID 1 starts the command as a child, forwards
SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 to it, reaps orphans, and exits with the child's
status (128 + signal when it was killed by one). Not PID 1 (docker --init, KFP, SageMaker's own
init), it simply execs the command.

Who runs it: the image's USER is root, because SageMaker (the service and both SDKs' local mode)
runs the image's USER against folders it creates as root (/opt/ml/model, /opt/ml/output; local
mode even makes input/data readable by root alone) and no client can pass `--user`. Started as
root, the entrypoint runs the command as the owner of `<root>/output` (or of the root): root for
SageMaker's folders; the image's `openeds` user (uid 1000) for the image's own /opt/ml; the host
user for a tree they own and bind-mount, so the files stay theirs. Started with `--user`, nothing
changes. OPENEDS_KEEP_ROOT=1 stays root.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

IMAGE_USER = (1000, 1000, "/home/openeds")  # uid, gid, home of the image's `openeds` user
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
PASSTHROUGH = {"sh", "bash", "python", "python3", "pip", "env"}


def sagemaker_started() -> bool:
    from steps.sagemaker import is_sagemaker_invocation

    return is_sagemaker_invocation(Path(os.environ.get("SAGEMAKER_BASE_DIR") or "/opt/ml"), os.environ)


def command_for(argv: Sequence[str]) -> list[str]:
    python = sys.executable
    if not argv:
        return [python, "-m", "steps", "train" if sagemaker_started() else "--help"]
    if argv[0] in ("-h", "--help", "help"):
        return [python, "-m", "steps", "--help"]
    if argv[0] in PASSTHROUGH or argv[0].startswith("/"):
        return list(argv)
    if argv[0] == "kfp":
        return [python, "-m", "pipelines.launch", *argv[1:]]
    return [python, "-m", "steps", *argv]


def run_as(env: Mapping[str, str]) -> tuple[int, int, str] | None:
    """(uid, gid, home) to drop to: the owner of `<root>/output` (what every step writes), or of the
    root when output/ is not there yet; None (stay root) when that owner is root."""
    root = Path(env.get("SAGEMAKER_BASE_DIR") or "/opt/ml")
    folder = next((f for f in (root / "output", root) if f.exists()), None)
    if folder is None or folder.stat().st_uid == 0:
        return None
    owner = folder.stat()
    return owner.st_uid, owner.st_gid, IMAGE_USER[2] if owner.st_uid == IMAGE_USER[0] else "/tmp"


def drop_privileges(env: MutableMapping[str, str]) -> None:
    """Started as root: become the user who owns the step's folders, so its files stay theirs."""
    if os.geteuid() != 0 or env.get("OPENEDS_KEEP_ROOT") == "1":
        return
    target = run_as(env)
    if target is None:
        return
    uid, gid, home = target
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    env["HOME"] = home if os.access(home, os.W_OK) else "/tmp"


def exit_status(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def supervise(command: list[str]) -> int:
    """Run `command` as PID 1's child: forward signals, reap zombies, return its status."""
    child = subprocess.Popen(command)
    for sig in FORWARDED:
        signal.signal(sig, lambda number, _frame: child.send_signal(number))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return child.returncode if child.returncode is not None else 1
        if pid == child.pid:
            return exit_status(status)


def main(argv: Sequence[str] | None = None) -> int:
    command = command_for(list(sys.argv[1:] if argv is None else argv))
    drop_privileges(os.environ)
    if os.getpid() != 1:
        os.execvp(command[0], command)
    return supervise(command)


if __name__ == "__main__":
    sys.exit(main())
