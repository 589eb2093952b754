"""scripts/run_all_stages.py: the stages in pipeline order without DVC, and a rerun skips what is done."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "run_all_stages.py"


def _run(out: Path) -> str:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--generated", "8", "--size", "48",
                           "--no-tracking", "--stages", "split", "scratch"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_runs_stages_in_order_and_skips_finished_ones(tmp_path):
    first = _run(tmp_path)
    summary = json.loads((tmp_path / "run_summary.json").read_text())
    assert list(summary["stages"]) == ["split", "scratch"]
    assert 0.0 <= summary["stages"]["scratch"]["test/acc"] <= 1.0
    assert (tmp_path / "metrics" / "scratch.json").exists() and (tmp_path / "models" / "scratch.pt").exists()
    assert "scratch              done before, skipped" not in first
    second = _run(tmp_path)
    assert "scratch              done before, skipped" in second


def test_bad_override_is_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--no-tracking", "scratch.epochs=-1",
                           "--stages", "scratch"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "scratch.epochs" in proc.stderr
