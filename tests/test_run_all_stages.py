"""scripts/run_all_stages.py: the stages in pipeline order without DVC, and a rerun skips what is done."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration      # every test here runs the script as a process

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "run_all_stages.py"


def _run(out: Path) -> str:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--generated", "8", "--size", "48",
                           "--no-tracking", "--stages", "split", "scratch", "publish"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_runs_stages_in_order_and_skips_finished_ones(tmp_path):
    first = _run(tmp_path)
    summary = json.loads((tmp_path / "run_summary.json").read_text())
    assert list(summary["stages"]) == ["split", "scratch", "publish"]
    assert 0.0 <= summary["stages"]["scratch"]["test/acc"] <= 1.0
    assert (tmp_path / "metrics" / "scratch.json").exists() and (tmp_path / "models" / "scratch.pt").exists()
    # publish with tracking off: the model card, and the champion chosen without a registry
    assert "Known limits" in (tmp_path / "models" / "scratch.md").read_text()
    assert "tracking off" in json.loads((tmp_path / "models" / "published.json").read_text())["champion"]
    assert "scratch              done before, skipped" not in first
    second = _run(tmp_path)
    assert "scratch              done before, skipped" in second


def test_bad_override_is_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--no-tracking", "scratch.epochs=-1",
                           "--stages", "scratch"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "scratch.epochs" in proc.stderr


def test_seeds_share_the_split_and_fill_one_ledger(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--generated", "8", "--size", "48",
                           "--no-tracking", "--seeds", "5", "6", "--jobs", "2",
                           "--stages", "split", "scratch", "compare"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "seed 5: done" in proc.stdout and "seed 6: done" in proc.stdout
    for seed in (5, 6):
        seed_dir = tmp_path / f"seed-{seed}"
        assert json.loads((seed_dir / "metrics" / "scratch.json").read_text())["seed"] == seed
        assert not (seed_dir / "split").exists() and not (seed_dir / "cache").exists()   # read the shared ones
    entries = sorted((tmp_path / "seeds" / "scratch").glob("*/seed-*.json"))
    assert [e.name for e in entries] == ["seed-5.json", "seed-6.json"]
    assert entries[0].parent == entries[1].parent                       # one recipe: only the seed differs
    compared = json.loads((tmp_path / "metrics" / "compare.json").read_text())
    assert compared["scratch/seeds"] == 2, compared


def test_jobs_must_be_positive(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--seeds", "1", "--jobs", "0"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--jobs must be at least 1" in proc.stderr
