"""Every command in the README works pasted into a fresh shell, with the venv not activated.

The README's ```bash blocks are parsed (tests/readme_commands.py). Each program must resolve from a
fresh `PATH=/usr/bin:/bin` (a relative `.venv/bin/...` path counts when the venv exists; here the venv
running the tests stands for it when the checkout has none). The cheap commands are run: every venv
program's `--help`, the config composition of every override list, and `catdog-predict --format json` on
generated photos. No marker: CI's plain `python -m pytest` runs it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from catdog_lab.cli import CLI_KEYS
from catdog_lab.config import PROJECT_ROOT, compose
from catdog_lab.registry import stage
from conftest import make_photo
from readme_commands import Command, commands

README = PROJECT_ROOT / "README.md"
FRESH_PATH = "/usr/bin:/bin"
VENV = PROJECT_ROOT / ".venv" / "bin"
VENV_BIN = VENV if VENV.is_dir() else Path(sysconfig.get_path("scripts"))
BUILTINS = {"cd", "export", "set", "source", ".", "kill", "echo", "true", "wait"}
# programs that MLflow starts by name (not by path): they must be on the PATH the command runs with
EXECS_BY_NAME = {("mlflow", "models", "serve"): "uvicorn"}
COMMANDS = commands(README)


def _fresh_env() -> dict[str, str]:
    """A fresh login-like environment: no venv on PATH, no VIRTUAL_ENV (PYTHONPATH kept: it is how a
    checkout's own sources are tested against a shared venv, not an activation)."""
    keep = {key: os.environ[key] for key in ("HOME", "LANG", "PYTHONPATH", "TMPDIR") if key in os.environ}
    return keep | {"PATH": FRESH_PATH, "OMP_NUM_THREADS": "1"}


def _venv_path(path: Path) -> Path:
    """The README's `.venv/bin/X` -> the venv that exists (the checkout's, else the one running the tests)."""
    try:
        return VENV_BIN / path.relative_to(VENV)
    except ValueError:
        return path


def _resolve(program: str, path: str) -> Path | None:
    program = program.replace("$PWD", str(PROJECT_ROOT))
    if "/" in program:
        candidate = _venv_path(PROJECT_ROOT / program)
        return candidate if os.access(candidate, os.X_OK) and candidate.is_file() else None
    for folder in path.split(os.pathsep):
        folder = folder.replace("$PWD", str(PROJECT_ROOT)).replace("$PATH", FRESH_PATH)
        for part in folder.split(os.pathsep):
            found = shutil.which(program, path=str(_venv_path(PROJECT_ROOT / part)))
            if found:
                return Path(found)
    return None


def _effective_path(command: Command) -> str:
    return command.env.get("PATH", FRESH_PATH).replace("$PATH", FRESH_PATH)


def test_readme_is_parsed_into_its_commands():
    programs = {Path(command.program).name for command in COMMANDS}
    assert {"catdog", "catdog-predict", "catdog-export", "dvc", "mlflow", "git", "curl"} <= programs
    assert any(command.argv[1:3] == ["models", "serve"] for command in COMMANDS)
    assert len(COMMANDS) >= 40


def test_every_readme_program_resolves_without_the_venv_on_path():
    unresolved = []
    for command in COMMANDS:
        if command.program in BUILTINS:
            continue
        if _resolve(command.program, _effective_path(command)) is None:
            unresolved.append(f"README line {command.line}: {command.program!r} in `{command.text}`")
        for prefix, child in EXECS_BY_NAME.items():
            if (Path(command.program).name, *command.argv[1:len(prefix)]) == prefix and \
                    _resolve(child, _effective_path(command)) is None:
                unresolved.append(f"README line {command.line}: {prefix[0]} starts {child!r} by name, not on the "
                                  f"PATH of `{command.text}`")
    assert not unresolved, "\n".join(unresolved)


def _overrides(command: Command) -> list[str] | None:
    """The config overrides a command composes, one value of each sweep; None when it composes none."""
    name, args = Path(command.program).name, command.argv[1:]
    if name == "catdog":
        values = [arg for arg in args if "=" in arg and not arg.startswith("-")]
    elif name == "dvc" and args[:2] == ["exp", "run"]:
        values = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "-S"]
    elif name.startswith("python") and args and args[0].endswith("run_all_stages.py"):
        values = [arg for arg in args[1:] if "=" in arg and not arg.startswith("-")]
    else:
        return None
    out = []
    for value in values:
        key, _, val = value.partition("=")
        if key.startswith("hydra"):                 # Hydra's own settings (launchers, sweepers, run dirs)
            continue
        if key.lstrip("+") in CLI_KEYS:
            if key.lstrip("+") == "stage":
                stage(val)                          # a stage that exists
            continue
        out.append(f"{key}={val.split(',')[0]}")    # a sweep `a=1,2,3`: its first value
    return out


def test_every_readme_override_list_composes():
    checked = 0
    for command in COMMANDS:
        overrides = _overrides(command)
        if overrides is None:
            continue
        try:
            compose(overrides)
        except Exception as exc:                    # noqa: BLE001 - the message names the command
            pytest.fail(f"README line {command.line}: `{command.text}` does not compose: {exc}")
        checked += 1
    assert checked >= 15


def _help_commands() -> list[list[str]]:
    """`--help` of each venv program the README calls (a script: the script's), as it calls them."""
    seen, out = set(), []
    for command in COMMANDS:
        program = Path(command.program).name
        if not command.program.startswith(".venv/bin/") and "/.venv/bin/" not in command.program:
            continue
        if program == "pip":
            continue
        argv = [command.program]
        if program.startswith("python"):
            if not command.argv[1].endswith(".py"):
                continue
            argv.append(command.argv[1])
        elif program == "mlflow":                   # `mlflow models serve --help`, `mlflow ui --help`
            for word in command.argv[1:3]:
                if word.startswith("-"):
                    break
                argv.append(word)
        key = (program, *argv[1:])
        if key not in seen:
            seen.add(key)
            out.append(argv)
    out.append([".venv/bin/python", "-m", "catdog_lab.config"])     # named in the README's prose
    return out


@pytest.mark.parametrize("argv", _help_commands(), ids=lambda argv: " ".join(Path(a).name for a in argv))
def test_readme_programs_print_their_help_without_activation(argv):
    exe = _venv_path(PROJECT_ROOT / argv[0].replace("$PWD/", ""))
    proc = subprocess.run([str(exe), *argv[1:], "--help"], cwd=PROJECT_ROOT, env=_fresh_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage" in proc.stdout.lower() or "help" in proc.stdout.lower(), proc.stdout[:500]
    assert "Traceback" not in proc.stderr


def test_readme_predict_as_json_on_generated_photos(tmp_path):
    from catdog_lab.models.factory import build_from_arch, save_model
    from catdog_lab.settings import model_arch

    arch = model_arch(compose(["data.image_size=48"]), "scratch")
    model = tmp_path / "scratch.pt"
    save_model(model, "scratch", arch, build_from_arch(arch))
    photos = [make_photo(tmp_path / "photos" / "cat.1.jpg", "cat", 1),
              make_photo(tmp_path / "photos" / "deep" / "dog.2.png", "dog", 2, fmt="PNG")]
    [predict] = [command for command in COMMANDS if command.argv[:3] == [".venv/bin/catdog-predict", "--format", "csv"]]
    exe = _resolve(predict.program, FRESH_PATH)
    proc = subprocess.run([str(exe), "--model", str(model), "--format", "json", str(tmp_path / "photos")],
                          cwd=tmp_path, env=_fresh_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)
    assert sorted(row["file"] for row in rows) == sorted(map(str, photos))
    for row in rows:
        assert row["error"] is None and row["label"] in ("cat", "dog") and 0 <= row["p_dog"] <= 1
        assert row["probability"] == pytest.approx(row["p_dog"] if row["label"] == "dog" else 1 - row["p_dog"])


def test_config_module_help_is_usage_not_a_traceback():
    proc = subprocess.run([sys.executable, "-m", "catdog_lab.config", "--help"], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m catdog_lab.config")
    assert not proc.stderr.strip()
