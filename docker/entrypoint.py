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
root, the entrypoint runs the command as the owner of `<root>/output` (or of the root, the command's
`--root` when it has one): root for SageMaker's folders; the image's `openeds` user (uid 1000) for
the image's own /opt/ml; the host user for a tree they own and bind-mount, so the files stay theirs.
Started with `--user`, nothing changes. OPENEDS_KEEP_ROOT=1 stays root, and so does a container without the setuid capability
(`--cap-drop ALL`), with a warning. HOME falls back to /tmp when it cannot be written.
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


def step_root(env: Mapping[str, str], argv: Sequence[str]) -> Path:
    """The root the command works in: its `--root`, else SageMaker's base folder, else /opt/ml."""
    for index, arg in enumerate(argv):
        if arg.startswith("--root="):
            return Path(arg.split("=", 1)[1])
        if arg == "--root" and index + 1 < len(argv):
            return Path(argv[index + 1])
    return Path(env.get("SAGEMAKER_BASE_DIR") or "/opt/ml")


def run_as(env: Mapping[str, str], argv: Sequence[str] = ()) -> tuple[int, int, str] | None:
    """(uid, gid, home) to drop to: the owner of `<root>/output` (what every step writes), or of the
    root, or of its nearest existing parent (a bind mount the root will be made in); the image's
    user in a folder anyone may write to (/tmp); None (stay root) when that owner is root."""
    root = step_root(env, argv)
    folder = next((f for f in (root / "output", root, *root.parents) if f.exists()), None)
    if folder is None:
        return None
    owner = folder.stat()
    if owner.st_uid == 0 and owner.st_mode & 0o1002 == 0o1002:  # sticky and world-writable, like /tmp
        return IMAGE_USER
    if owner.st_uid == 0:
        return None
    return owner.st_uid, owner.st_gid, IMAGE_USER[2] if owner.st_uid == IMAGE_USER[0] else "/tmp"


def drop_privileges(env: MutableMapping[str, str], argv: Sequence[str] = ()) -> None:
    """Started as root: become the user who owns the step's folders, so its files stay theirs."""
    if os.geteuid() != 0 or env.get("OPENEDS_KEEP_ROOT") == "1":
        return
    target = run_as(env, argv)
    if target is None:
        return
    uid, gid, home = target
    try:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    except PermissionError:  # started without CAP_SETUID/CAP_SETGID (--cap-drop ALL, Kubernetes)
        print(f"openeds-entrypoint: cannot switch to uid {uid} (no setuid capability): running as uid "
              f"{os.geteuid()}; pass --user {uid}:{gid} to run as the folders' owner", file=sys.stderr)
        return
    env["HOME"] = home


def ensure_writable_home(env: MutableMapping[str, str]) -> None:
    """HOME must be writable (caches, matplotlib's config): not so for `--user 501:20` (macOS
    users) or a read-only root filesystem, where /home/openeds is the image's user's or read-only."""
    home = env.get("HOME")
    if not home or not os.access(home, os.W_OK):
        env["HOME"] = "/tmp"


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
    args = list(sys.argv[1:] if argv is None else argv)
    command = command_for(args)
    drop_privileges(os.environ, args)
    ensure_writable_home(os.environ)
    if os.getpid() != 1:
        os.execvp(command[0], command)
    return supervise(command)


if __name__ == "__main__":
    sys.exit(main())
