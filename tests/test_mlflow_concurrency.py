"""Concurrent writers (e.g. `dvc queue start -j 2`) share one SQLite MLflow store without losing data."""
import subprocess
import sys
import textwrap

import pytest
from mlflow.tracking import MlflowClient

WRITER = textwrap.dedent("""
    import sys
    from catdog_lab.config import compose
    from catdog_lab.stages import tracking_for
    from catdog_lab.tracking import stage_run
    db, art, worker = sys.argv[1], sys.argv[2], sys.argv[3]
    cfg = compose([f"tracking.uri=sqlite:///{db}", f"tracking.artifact_location={art}", f"scratch.lr={worker}e-4"])
    for r in range(3):
        with stage_run(tracking_for(cfg), "scratch", extra_tags={"worker": worker}) as run:
            for step in range(15):
                run.log_metrics({"val/acc": step / 15, "train/loss": 1 - step / 15}, step=step)
    print("done", worker)
""")


def _run_two(tmp_path, workers):
    db, art = tmp_path / "mlflow.db", tmp_path / "mlartifacts"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(art), str(w)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for w in workers]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return MlflowClient(tracking_uri=f"sqlite:///{db}")


@pytest.mark.integration
def test_two_processes_write_one_sqlite_store(tmp_path):
    client = _run_two(tmp_path, (1, 2))
    exps = client.search_experiments()
    assert [e.name for e in exps if e.name == "catdog-lab"] == ["catdog-lab"]          # created once
    exp = client.get_experiment_by_name("catdog-lab")
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'scratch'")
    assert sorted(r.data.tags["worker"] for r in runs) == ["1"] * 3 + ["2"] * 3
    for run in runs:
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 15
    parents = client.search_runs([exp.experiment_id], "tags.run_kind = 'pipeline'")
    assert len({r.data.tags["pipeline_id"] for r in parents}) == 2                      # one per params set


@pytest.mark.integration
def test_two_workers_of_one_pipeline_share_one_parent_run(tmp_path):
    client = _run_two(tmp_path, (3, 3))                  # same params: same pipeline
    exp = client.get_experiment_by_name("catdog-lab")
    parents = client.search_runs([exp.experiment_id], "tags.run_kind = 'pipeline'")
    assert len(parents) == 1
    children = client.search_runs([exp.experiment_id], "tags.stage = 'scratch'")
    assert len(children) == 6 and {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}


def test_queued_dvc_experiments_log_into_the_projects_store(tmp_path, monkeypatch):
    from catdog_lab.config import compose
    from catdog_lab.tracking import artifact_location, tracking_uri
    exp_dir = tmp_path / "project" / ".dvc" / "tmp" / "exps" / "tmpabc123"
    exp_dir.mkdir(parents=True)
    monkeypatch.delenv("DVC_ROOT", raising=False)             # the root comes from the cwd here
    monkeypatch.chdir(exp_dir)
    cfg = compose()
    assert tracking_uri(cfg.tracking.uri) == f"sqlite:///{tmp_path / 'project' / 'mlflow.db'}"
    assert artifact_location(cfg.tracking.artifact_location) == (tmp_path / "project" / "mlartifacts").as_uri()
    monkeypatch.chdir(tmp_path)
    assert tracking_uri(cfg.tracking.uri) == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_a_new_store_is_created_without_mlflows_schema_lines(tmp_path):
    """The first stage on a new store printed MLflow's two INFO lines ("Creating initial MLflow database
    tables...", "Updating database tables") before its own output."""
    code = textwrap.dedent("""
        import sys
        from catdog_lab.config import compose
        from catdog_lab.stages import tracking_for
        from catdog_lab.tracking import mlflow_client
        client = mlflow_client(tracking_for(compose([f"tracking.uri=sqlite:///{sys.argv[1]}"])))
        print(len(client.search_experiments()))
    """)
    db = tmp_path / "mlflow.db"
    proc = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert db.is_file() and proc.stdout.strip() == "1"           # the schema made: the Default experiment
    assert "database tables" not in proc.stderr and "alembic" not in proc.stderr, proc.stderr
