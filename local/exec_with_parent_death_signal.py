"""Run a command that Linux sends SIGTERM when its starter dies, even by `kill -9`.

    python exec_with_parent_death_signal.py STARTER_PID COMMAND [ARGUMENT ...]

It asks for the signal (prctl PR_SET_PDEATHSIG, which survives exec) and then becomes the command. This is a
separate program rather than a subprocess preexec_fn because preexec_fn is unsafe in a process with threads, and
the host that starts Azurite has several. Standard library only: it runs as a plain script.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import NoReturn

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def main(arguments: list[str]) -> int:
    if len(arguments) < 2 or not arguments[0].isdigit():
        print("usage: exec_with_parent_death_signal.py STARTER_PID COMMAND [ARGUMENT ...]", file=sys.stderr)
        return 2
    starter_pid, command = int(arguments[0]), arguments[1:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        print(f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 1
    if os.getppid() != starter_pid:  # the starter died before the request took effect: no signal will come
        return 1
    return become(command)


def become(command: list[str]) -> NoReturn:
    os.execvp(command[0], command)  # noqa: S606 -- the starter's own argument list, no shell on purpose


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
