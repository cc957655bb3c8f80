"""Entrypoint of the image: which command a `docker run IMAGE ARGS...` runs.

    STEP [flags]           python -m steps STEP [flags]   (download-kaggle, preprocess, ... validate)
    train                  python -m steps train          (SageMaker; the step comes from the `step`
                                                           hyperparameter or OPENEDS_STEP)
    list | describe | validate-contract ...               python -m steps ...
    kfp STEP ...           python -m pipelines.launch STEP ...   (what the KFP components run)
    sh | bash | python ... that command as is

As PID 1 (a plain `docker run`), the kernel ignores signals a process has no handler for, so
`docker stop` would wait and then SIGKILL. Here PID 1 starts the command as a child, forwards
SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 to it, reaps orphans, and exits with the child's
status (128 + signal when it was killed by one). Not PID 1 (docker --init, KFP, SageMaker's own
init), it simply execs the command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
PASSTHROUGH = {"sh", "bash", "python", "python3", "pip", "env"}


def command_for(argv: Sequence[str]) -> list[str]:
    python = sys.executable
    if not argv or argv[0] in ("-h", "--help", "help"):
        return [python, "-m", "steps", "--help"]
    if argv[0] in PASSTHROUGH or argv[0].startswith("/"):
        return list(argv)
    if argv[0] == "kfp":
        return [python, "-m", "pipelines.launch", *argv[1:]]
    return [python, "-m", "steps", *argv]


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
    if os.getpid() != 1:
        os.execvp(command[0], command)
    return supervise(command)


if __name__ == "__main__":
    sys.exit(main())
