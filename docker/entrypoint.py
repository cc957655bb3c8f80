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
runs the image's USER against folders it creates as root (/opt/ml/model, /opt/ml/output) and no
client can pass `--user`. Started as root, the entrypoint hands the folders a step writes (the
root itself, model/, output/, checkpoints/) to one unprivileged user and drops to it before
running anything: the owner of those folders when it is not root (a user's bind-mounted tree:
files stay theirs), otherwise `openeds` (uid 1000), which then owns the root-owned entries there.
Started with `--user`, nothing changes. OPENEDS_KEEP_ROOT=1 stays root; so does a folder that
cannot be handed over (read-only, or a filesystem that refuses chown), with a warning.
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


def writable_folders(env: Mapping[str, str]) -> list[Path]:
    """What a step writes: the root (lock, staging of model/), model/, output/, checkpoints/."""
    root = Path(env.get("SAGEMAKER_BASE_DIR") or "/opt/ml")
    folders = [root / "model", root / "output", root / "checkpoints"]
    folders += [Path(env[name]) for name in ("SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR", "SM_CHECKPOINT_DIR",
                                             "OPENEDS_CHECKPOINT_DIR") if env.get(name)]
    return [root, *dict.fromkeys(folders)]


def choose_user(folders: Sequence[Path]) -> tuple[int, int, str]:
    """The first non-root owner of the folders (files stay the caller's), else the image's user."""
    for folder in folders:
        owner = folder.stat() if folder.exists() else None
        if owner is not None and owner.st_uid != 0:
            return owner.st_uid, owner.st_gid, IMAGE_USER[2] if owner.st_uid == IMAGE_USER[0] else "/tmp"
    return IMAGE_USER


def hand_over(folders: Sequence[Path], uid: int, gid: int) -> None:
    """chown the root-owned entries of the folders (the root itself alone: input/ stays as mounted)."""
    for index, folder in enumerate(folders):
        folder.mkdir(parents=True, exist_ok=True)
        entries = [folder] if index == 0 else [folder, *folder.rglob("*")]
        for entry in entries:
            if entry.lstat().st_uid == 0:
                os.chown(entry, uid, gid, follow_symlinks=False)


def drop_privileges(env: MutableMapping[str, str]) -> None:
    """As root (SageMaker, a plain `docker run`): become the folders' unprivileged user."""
    if os.geteuid() != 0 or env.get("OPENEDS_KEEP_ROOT") == "1":
        return
    folders = writable_folders(env)
    uid, gid, home = choose_user(folders)
    try:
        hand_over(folders, uid, gid)
    except OSError as error:
        print(f"openeds-entrypoint: staying root: cannot hand {error.filename} to uid {uid} "
              f"({error.strerror})", file=sys.stderr, flush=True)
        return
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
