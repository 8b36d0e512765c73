"""Run a command that dies with its parent: `python orphan_guard.py PARENT_PID CMD ARGS...` (Linux).

A managed model server must not outlive the worker that started it: a worker killed by the OOM killer, by
`scancel` or by a pool that exits with `os._exit` never runs its cleanup, and an orphaned `vllm serve` keeps
its GPU memory, so the task's retry cannot start its own server. The kernel can close that gap: a process that
asks for PR_SET_PDEATHSIG gets a signal when its parent dies, and the setting survives `exec`. Setting it in
`preexec_fn` would be simpler but is unsafe in a threaded parent, so this tiny script (run by path, importing
nothing from the package) sets it and then becomes the server.

The signal is SIGTERM so the server shuts its own children down; `ManagedServer.stop` still kills whatever is
left in the process group. Note: "parent" is the *thread* that started the process, so start servers from a
thread that lives as long as the server (the task's main thread does).
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    parent, command = int(argv[0]), argv[1:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        sys.exit(f"orphan_guard: prctl failed: {os.strerror(ctypes.get_errno())}")
    if os.getppid() != parent:  # the parent died before prctl took effect: nobody is left to serve
        sys.exit("orphan_guard: parent exited before the server started")
    try:
        os.execvp(command[0], command)
    except OSError as e:
        sys.exit(f"orphan_guard: cannot run {command[0]!r}: {e.strerror}")


if __name__ == "__main__":
    main(sys.argv[1:])
