"""Atomic writes: every output appears whole or not at all, so a killed stage never leaves a
half-written file that DVC or a later stage would take for valid."""
from __future__ import annotations

import contextlib
import csv
import json
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Iterator

import torch

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)            # mkstemp makes 0600 files: give outputs the usual mode
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock between processes on `path` (created, never removed), held for the block. Without
    POSIX locks (Windows) the block runs unlocked."""
    lock_path = Path(path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        try:
            import fcntl
            fcntl.flock(handle, fcntl.LOCK_EX)
        except ImportError:
            pass
        yield


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_csv(path, rows: list[dict], fieldnames: list[str]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def torch_save(obj, path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def torch_load(path, map_location="cpu"):
    """Load our own tensors/state dicts: never unpickles code."""
    return torch.load(path, map_location=map_location, weights_only=True)


# torch's words for a pickle that would import or call code: "Unsupported global: GLOBAL x.y" (older) or
# "Trying to load unsupported GLOBAL posix.system whose module ..." (2.6 and later)
_CODE_GLOBAL = re.compile(r"unsupported global:? (?:GLOBAL )?([\w.]+)", re.IGNORECASE)


def read_torch_file(path, what: str, error: type[Exception]):
    """`torch_load` for a file a user names: any failure becomes one line, `error(f"{what}: ...")`, instead of
    torch's traceback (whose advice, to retry with weights_only=False, is exactly what not to do with a file
    that holds code)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise error(f"{what}: {path} is {'a folder' if path.is_dir() else 'not found'}, not a PyTorch file")
    try:
        return torch_load(path)
    except pickle.UnpicklingError as exc:
        found = _CODE_GLOBAL.search(str(exc))
        if found:   # a pickle that would import or call code: refused, never run
            raise error(f"{what}: {path} refused by torch.load(weights_only=True): it holds objects other "
                        f"than tensors (GLOBAL {found.group(1)})") from None
        raise error(f"{what}: {path} is not a readable PyTorch file (corrupt or not a checkpoint)") from None
    except Exception as exc:
        raise error(f"{what}: {path} is not a readable PyTorch file ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:120] if str(exc) else 'truncated?'})") from None


DVC_EXP_WORKSPACE = "/.dvc/tmp/exps/"


def project_root() -> Path:
    """Where paths shared by every run of the project live (the MLflow store, the seed ledger): the
    root of the DVC project running the stage ($DVC_ROOT, which DVC sets for every stage command),
    else the current directory."""
    start = Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()
    text = start.as_posix()
    # `dvc exp run --queue` / `--temp` runs each experiment in a temporary copy under
    # <project>/.dvc/tmp/exps/...; what it records belongs to the project, not to the copy (deleted
    # afterwards). Recent DVC points DVC_ROOT at the project for those runs (3.67 does), but older
    # ones give the copy's root, and so does the cwd of a command run by hand in the copy: map it back.
    return Path(text.split(DVC_EXP_WORKSPACE)[0]) if DVC_EXP_WORKSPACE in text else start


def shared_path(path: str | Path) -> Path:
    """`path` if absolute, else under the project root (see `project_root`)."""
    path = Path(path)
    return path if path.is_absolute() else project_root() / path
