"""Stage commands (`python3 pipelines/<stage>.py`) run in the Python that runs `dvc`, not PATH's first one."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from catdog_lab.config import PROJECT_ROOT

SYSTEM_PATH = os.pathsep.join(p for p in ("/usr/local/bin", "/usr/bin", "/bin") if Path(p).is_dir())
OTHER_PYTHON = shutil.which("python3", path=SYSTEM_PATH)

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.name != "posix" or OTHER_PYTHON is None or str(Path(sys.executable).parent)
                                 in SYSTEM_PATH.split(os.pathsep), reason="needs a python3 outside this venv")]


def _probe(tmp_path) -> Path:
    probe = tmp_path / "probe.py"
    probe.write_text(f"import sys\nsys.path.insert(0, {str(PROJECT_ROOT / 'pipelines')!r})\n"
                     "import _interpreter\nprint(sys.executable)\n")
    return probe


def test_a_stage_started_by_dvc_reruns_in_dvcs_python(tmp_path):
    # a stand-in for the venv's `dvc` console script: same shebang, and it starts the stage the way DVC
    # does (a shell running `python3 ...`) with a PATH that does not contain the venv
    fake_dvc = tmp_path / "bin" / "dvc"
    fake_dvc.parent.mkdir()
    fake_dvc.write_text(f"#!{sys.executable}\nimport subprocess, sys\n"
                        f"sys.exit(subprocess.run(['/bin/sh', '-c', 'python3 {_probe(tmp_path)}'],"
                        f" env={{'PATH': {SYSTEM_PATH!r}}}).returncode)\n")
    fake_dvc.chmod(0o755)
    out = subprocess.run([str(fake_dvc)], capture_output=True, text=True, timeout=60, env={"PATH": SYSTEM_PATH})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == sys.executable


def test_without_a_dvc_parent_the_current_python_is_kept(tmp_path):
    out = subprocess.run(["python3", str(_probe(tmp_path))], capture_output=True, text=True, timeout=60,
                         env={"PATH": SYSTEM_PATH})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == OTHER_PYTHON
