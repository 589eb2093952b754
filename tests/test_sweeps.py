"""Sweeps that fan out: Hydra's joblib and submitit launchers run real parallel/separate processes, each job
its own MLflow run in the shared SQLite store; Optuna maximises the validation accuracy jobs return."""
import json

import pytest
import yaml

from conftest import tiny_overrides
from test_cli import _catdog

pytestmark = pytest.mark.integration      # every test here starts `catdog` processes


def _overrides(tiny_split, tmp_path, raw_images):
    out = [o for o in tiny_overrides(tmp_path, raw_images) if not o.startswith("paths.")]
    return out + [f"paths.cache={tiny_split.paths.cache}", f"paths.split={tiny_split.paths.split}"]


def _runs(cfg, stage):
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    return client.search_runs([exp.experiment_id], f"tags.stage = '{stage}'")


def _job_metrics(sweep, stage):
    return [json.loads(p.read_text()) for p in sorted(sweep.glob(f"*/metrics/{stage}.json"))]


def _check_two_scratch_jobs(tiny_split, sweep):
    assert len(_job_metrics(sweep, "scratch")) == 2
    runs = _runs(tiny_split, "scratch")
    assert sorted((r.data.params["scratch.lr"], r.info.status) for r in runs) == [("0.0001", "FINISHED"),
                                                                                 ("0.001", "FINISHED")]


def test_joblib_launcher_runs_two_jobs_in_parallel(tiny_split, tmp_path, raw_images):
    sweep = tmp_path / "sweep"
    proc = _catdog(["-m", "stage=scratch", "scratch.lr=1e-3,1e-4", *_overrides(tiny_split, tmp_path, raw_images),
                    "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    _check_two_scratch_jobs(tiny_split, sweep)


def test_submitit_local_launcher_runs_each_job_in_its_own_process(tiny_split, tmp_path, raw_images):
    sweep = tmp_path / "sweep"
    proc = _catdog(["-m", "stage=scratch", "scratch.lr=1e-3,1e-4", *_overrides(tiny_split, tmp_path, raw_images),
                    "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep}"],
                   tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # submitit's own record of the two jobs it started (one folder per job id, with its result pickle)
    assert len(list(sweep.glob(".submitit/*/*_result.pkl"))) == 2
    _check_two_scratch_jobs(tiny_split, sweep)


def test_slurm_launcher_is_one_file_of_cluster_settings(tmp_path):
    proc = _catdog(["stage=scratch", "hydra/launcher=slurm", "hydra.launcher.partition=long", "--cfg", "hydra"],
                   tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    launcher = yaml.safe_load(proc.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["partition"] == "long" and launcher["gpus_per_node"] == 1 and launcher["timeout_min"] == 240


def test_optuna_maximises_the_returned_validation_accuracy(tiny_split, tmp_path, raw_images):
    sweep = tmp_path / "sweep"
    proc = _catdog(["-m", "stage=augmented", "hydra/sweeper=tune_augmented", "hydra.sweeper.n_trials=2",
                    *_overrides(tiny_split, tmp_path, raw_images), f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = _job_metrics(sweep, "augmented")
    assert len(jobs) == 2
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(m["val/acc"] for m in jobs)           # val/acc, not test/acc
    assert set(best["best_params"]) == {"augmented.lr", "augmented.dropout"}
    runs = _runs(tiny_split, "augmented")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert 1e-5 <= float(best["best_params"]["augmented.lr"]) <= 1e-3
    assert len({r.data.params["augmented.dropout"] for r in runs}) == 2   # each trial its own dropout
