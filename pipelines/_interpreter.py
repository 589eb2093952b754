"""Run every stage with the Python that runs DVC, whatever `python3` on PATH is.

dvc.yaml's `cmd` can only name an interpreter by PATH lookup, and DVC exports nothing that points
at its own interpreter (only DVC_ROOT and DVC_STAGE). So `.venv/bin/dvc repro` with the venv not on
PATH used to start the system Python, which has no catdog_lab. Every stage script imports this
module first: it finds the `dvc` process among its ancestors and, when that process runs another
interpreter, replaces itself with that one. With an activated venv or conda env both are the same
and nothing happens; run by hand (`python3 pipelines/scratch.py`), the current Python is kept.

Standard library only, and old syntax: it runs under whatever `python3` is first on PATH.
Ancestors are read from /proc (Linux) or `ps` (macOS, paths without spaces).
"""
import os
import subprocess
import sys

_MARK = "CATDOG_STAGE_INTERPRETER"      # set after one re-exec: never loop


def _argv_and_parent(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            argv = [a.decode(errors="replace") for a in handle.read().split(b"\0") if a]
        with open("/proc/%d/stat" % pid) as handle:
            parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        return argv, parent
    except (OSError, ValueError, IndexError):
        pass
    try:
        out = subprocess.run(["ps", "-o", "ppid=", "-o", "command=", "-p", str(pid)], capture_output=True,
                             text=True, timeout=5).stdout.split()
        return out[1:], int(out[0])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return [], 0


def _is_dvc(argv):
    for i, arg in enumerate(argv[:3]):
        name = os.path.basename(arg)
        if name in ("dvc", "dvc.exe", "dvc-script.py") or arg.endswith(os.path.join("dvc", "__main__.py")):
            return True
        if arg == "-m" and i + 1 < len(argv) and argv[i + 1] == "dvc":
            return True
    return False


def _interpreter_of(argv):
    """argv[0] of a `dvc` process is its interpreter (the kernel puts the shebang's path there);
    a frozen `dvc` binary has no Python to offer."""
    exe = argv[0] if argv else ""
    if os.path.isabs(exe) and os.path.basename(exe).lower().startswith("python") and os.access(exe, os.X_OK):
        return exe
    return None


def dvc_python(max_depth=8):
    """The interpreter of the nearest `dvc` ancestor process, or None."""
    pid = os.getppid()
    for _ in range(max_depth):
        if pid <= 1:
            return None
        argv, parent = _argv_and_parent(pid)
        if _is_dvc(argv):
            return _interpreter_of(argv)
        pid = parent
    return None


def ensure():
    if os.environ.get(_MARK):
        return
    exe = dvc_python()
    if exe is None or os.path.abspath(exe) == os.path.abspath(sys.executable):
        return
    os.environ[_MARK] = exe
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(exe, [exe] + sys.argv)


ensure()
