"""The Hydra CLI runs the same stage functions, writing into Hydra's job folders."""
import subprocess
import sys
from pathlib import Path

from conftest import tiny_overrides


def _catdog(args, cwd):
    exe = Path(sys.executable).parent / "catdog"
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_cli_single_run_and_multirun(tiny_split, tmp_path, raw_images):
    overrides = [o for o in tiny_overrides(tmp_path, raw_images) if not o.startswith("paths.")]
    overrides += [f"paths.cache={tiny_split.paths.cache}", f"paths.split={tiny_split.paths.split}"]
    single = _catdog(["stage=scratch", *overrides, f"hydra.run.dir={tmp_path}/run"], tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    assert (tmp_path / "run/metrics/scratch.json").exists()
    assert not (tmp_path / "metrics").exists()            # nothing written over the workspace outputs

    sweep = _catdog(["-m", "stage=scratch", "scratch.lr=1e-3,1e-4", *overrides,
                     f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    assert sorted(p.parent.parent.name for p in (tmp_path / "sweep").glob("*/metrics/scratch.json")) == ["0", "1"]

    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=tiny_split.tracking.uri)
    exp = client.get_experiment_by_name(tiny_split.tracking.experiment)
    lrs = sorted(r.data.params["scratch.lr"] for r in client.search_runs([exp.experiment_id], "tags.stage = 'scratch'"))
    assert lrs == ["0.0001", "0.0001", "0.001"]


def test_cli_bad_value_is_one_line(tmp_path):
    proc = _catdog(["stage=scratch", "scratch.epochs=0", f"hydra.run.dir={tmp_path}/run"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: scratch.epochs: must be a positive integer, got 0"
