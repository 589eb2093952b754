"""The Hydra CLI runs the same stage functions, writing into Hydra's job folders."""
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_overrides


def _catdog(args, cwd):
    exe = Path(sys.executable).parent / "catdog"
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.integration
def test_cli_single_run_and_multirun(tiny_split, tmp_path, raw_images):
    overrides = [o for o in tiny_overrides(tmp_path, raw_images) if not o.startswith("paths.")]
    overrides += [f"paths.cache={tiny_split.paths.cache}", f"paths.split={tiny_split.paths.split}"]
    single = _catdog(["stage=scratch", *overrides, f"hydra.run.dir={tmp_path}/run"], tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    assert (tmp_path / "run/metrics/scratch.json").exists()
    # a rerun starts a new timestamped folder: the job says which one to name to resume this one
    assert "[scratch] job folder run; if this run stops, the same command with hydra.run.dir=run resumes" \
        in single.stdout
    # nothing written into the workspace, not even the seed ledger: the job keeps it with its outputs
    assert not (tmp_path / "metrics").exists()
    assert len(list((tmp_path / "run/metrics/seeds/scratch").glob("*/seed-*.json"))) == 1

    sweep = _catdog(["-m", "stage=scratch", "scratch.lr=1e-3,1e-4", *overrides,
                     f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    assert sorted(p.parent.parent.name for p in (tmp_path / "sweep").glob("*/metrics/scratch.json")) == ["0", "1"]
    # the sweep's jobs share one ledger in the sweep folder (same recipe but the lr: two recipe folders)
    assert len(list((tmp_path / "sweep/metrics/seeds/scratch").glob("*/seed-*.json"))) == 2
    assert not (tmp_path / "metrics").exists()

    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=tiny_split.tracking.uri)
    exp = client.get_experiment_by_name(tiny_split.tracking.experiment)
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'scratch'")
    assert sorted(r.data.params["scratch.lr"] for r in runs) == ["0.0001", "0.0001", "0.001"]
    # a sweep job's run name carries the values it was swept over; the single job's does not
    names = sorted(r.info.run_name for r in runs)
    base = "1 scratch: small convnet from scratch (5.2)"
    assert names == [base, f"{base} [scratch.lr=0.0001]", f"{base} [scratch.lr=0.001]"]   # as Hydra writes them


@pytest.mark.integration
def test_cli_bad_value_is_one_line(tmp_path):
    proc = _catdog(["stage=scratch", "scratch.epochs=0", f"hydra.run.dir={tmp_path}/run"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: scratch.epochs: must be a positive integer, got 0"


def _files(root: Path) -> set[str]:
    """Stage outputs under root (not Hydra's own files, nor the MLflow store the runs share)."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and p.suffix != ".log" and not {".hydra", "mlartifacts"} & set(p.parts)
            and not p.name.startswith("mlflow.db")}


@pytest.mark.integration
def test_cli_finetune_sweep_reads_upstream_and_returns_validation_metric(tmp_path, raw_images):
    """`catdog -m stage=finetune finetune.lr=...` finds features_augmented's model in the workspace, writes
    only finetune's outputs into each job folder, and returns the validation metric, not test accuracy."""
    import csv
    import json

    import torch

    from catdog_lab.config import compose
    from catdog_lab.io import torch_load, torch_save
    from catdog_lab.stages.split import split
    from catdog_lab.stages.train import train

    ws = tmp_path / "ws"                                    # a workspace, as `dvc repro` leaves it
    cfg = compose(tiny_overrides(ws, raw_images))
    split(cfg)
    train(cfg, "features_augmented")
    # mark the upstream model, so that the sweep's frozen block1 proves which file it started from
    upstream_model = ws / "models/features_augmented.pt"
    bundle = torch_load(upstream_model)
    bundle["state_dict"]["features.0.weight"] += 1.0
    torch_save(bundle, upstream_model)
    before = _files(ws)

    overrides = [o for o in tiny_overrides(ws, raw_images) if not o.startswith("paths.")]
    sweep = _catdog(["-m", "stage=finetune", "finetune.lr=1e-5,2e-5", *overrides,
                     f"hydra.sweep.dir={tmp_path}/sweep"], ws)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    assert _files(ws) == before                            # the workspace is only read (the ledger stays out too)
    ledger = list((tmp_path / "sweep/metrics/seeds/finetune").glob("*/seed-*.json"))
    assert len(ledger) == 2, ledger                        # the sweep's own ledger: one entry per recipe (lr)
    returned = [float(line.rsplit("= ", 1)[1]) for line in sweep.stdout.splitlines()
                if line.startswith("[finetune] returned to Hydra: val/acc = ")]
    assert len(returned) == 2
    for job, value in zip(sorted((tmp_path / "sweep").glob("[0-9]")), returned):
        assert _files(job) == {"models/finetune.pt", "metrics/finetune.json", "plots/finetune.csv",
                               "plots/finetune_confusion.csv", "reports/curves/finetune.png",
                               "reports/confusion/finetune.png"}
        tuned = torch_load(job / "models/finetune.pt")["state_dict"]
        assert torch.equal(tuned["features.0.weight"], bundle["state_dict"]["features.0.weight"])
        metrics = json.loads((job / "metrics/finetune.json").read_text())
        rows = list(csv.DictReader((job / "plots/finetune.csv").open()))
        kept = [r for r in rows if int(r["epoch"]) == metrics["selected_epoch"]][0]
        assert value == metrics["val/acc"] == round(float(kept["val/acc"]), 6)
    lrs = [(p / ".hydra/overrides.yaml").read_text() for p in sorted((tmp_path / "sweep").glob("[0-9]"))]
    assert "finetune.lr=1e-05" in lrs[0] and "finetune.lr=2e-05" in lrs[1]

    # compare from elsewhere, reading the workspace as `upstream=`: its page links the workspace's curves
    out = tmp_path / "elsewhere"
    out.mkdir()
    single = _catdog(["stage=compare", f"upstream={ws}", *overrides, f"hydra.run.dir={out}/run"], out)
    assert single.returncode == 0, single.stderr[-2000:]
    assert "returned to Hydra" not in single.stdout            # nothing to tune on in compare
    assert _files(out / "run") == {"reports/comparison.md", "reports/accuracy.png", "reports/index.html",
                                   "metrics/compare.json"}
    assert "features_augmented" in (out / "run/reports/comparison.md").read_text()
    from catdog_lab.report import referenced_files
    images = referenced_files(out / "run/reports/index.html")
    assert any(p.name == "features_augmented.png" for p in images) and all(p.exists() for p in images)

    # publish from elsewhere, tracking off: the workspace's model gets its card, in the job's folder only
    published = _catdog(["stage=publish", f"upstream={ws}", *overrides, "tracking.enabled=false",
                         f"hydra.run.dir={out}/publish"], out)
    assert published.returncode == 0, published.stderr[-2000:]
    assert _files(out / "publish") == {"models/features_augmented.md", "models/published.json"}
    record = json.loads((out / "publish/models/published.json").read_text())
    assert record["models"]["features_augmented"]["registered"] is None
    assert record["champion"].startswith("Champion: `features_augmented`") and "tracking off" in record["champion"]
    # the card states the upstream's split
    from catdog_lab.data.split import manifest_hash
    assert f"hash `{manifest_hash(ws / 'data/split')}`" in (out / "publish/models/features_augmented.md").read_text()


def test_sweep_objective_is_validation_never_test():
    from catdog_lab.cli import objective
    result = {"test/acc": 0.9, "test/acc_best": 0.95, "val/acc": 0.7}
    assert objective("finetune", result) == 0.7
    assert objective("visualize", result) is None and objective("compare", result) is None
    assert objective("publish", {"models": {}, "champion": "Champion: none"}) is None


@pytest.mark.integration
def test_cli_features_job_reuses_the_workspace_conv_base_outputs(tmp_path, raw_images):
    """A `features` job reads the workspace's current conv-base features instead of recomputing them."""
    from catdog_lab.config import compose
    from catdog_lab.stages.split import split
    from catdog_lab.stages.train import train

    ws = tmp_path / "ws"
    cfg = compose(tiny_overrides(ws, raw_images))
    split(cfg)
    train(cfg, "features")
    overrides = [o for o in tiny_overrides(ws, raw_images) if not o.startswith("paths.")]
    job = _catdog(["stage=features", "features.lr=1e-3", *overrides, f"hydra.run.dir={tmp_path}/run"], ws)
    assert job.returncode == 0, job.stderr[-2000:]
    assert f"cached conv-base features in {ws / 'data/features'} are current" in job.stdout
    written = _files(tmp_path / "run")
    ledger = {f for f in written if f.startswith("metrics/seeds/features/")}     # the job keeps its own ledger
    assert len(ledger) == 1 and written - ledger == {"models/features.pt",
                                                     "metrics/features.json", "plots/features.csv",
                                                     "plots/features_confusion.csv",
                                                     "reports/curves/features.png",
                                                     "reports/confusion/features.png"}
    # another backbone setting makes the cache stale: the job computes its own, in its own folder
    other = _catdog(["stage=features", *overrides, "backbone.feature_batch_size=4",
                     f"hydra.run.dir={tmp_path}/run2"], ws)
    assert other.returncode == 0, other.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "run2/data/features").glob("*.pt")) == ["test.pt", "train.pt",
                                                                                      "validation.pt"]


def test_sweep_run_names_carry_only_the_swept_overrides():
    from catdog_lab.cli import swept_overrides

    task = ["+stage=finetune", "finetune.lr=1e-05", "data.source.path=/photos", "seed=2"]
    args = ["+stage=finetune", "finetune.lr=1e-5,2e-5", "data.source.path=/photos", "seed=range(1,4)"]
    assert swept_overrides(task, args, []) == "finetune.lr=1e-05 seed=2"
    # Optuna: the searched keys are the sweeper's params, not command-line sweeps
    assert swept_overrides(["+stage=augmented", "augmented.lr=0.0003", "augmented.dropout=0.4"],
                           ["+stage=augmented", "hydra/sweeper=tune_augmented"],
                           ["augmented.lr", "augmented.dropout"]) == "augmented.lr=0.0003 augmented.dropout=0.4"
    assert swept_overrides(task, ["+stage=finetune"], []) == ""


def test_every_command_line_tools_help_starts_with_its_docstrings_whole_first_paragraph():
    # `--help` printed the docstring's first LINE, cut mid-sentence ("... returns every class's"); the
    # description is the first paragraph, and that paragraph is a whole sentence
    import ast

    from catdog_lab.config import PROJECT_ROOT

    files = [p for folder in ("src", "scripts", "benchmarks") for p in (PROJECT_ROOT / folder).rglob("*.py")
             if "__doc__" in p.read_text() and "ArgumentParser(" in p.read_text()]
    assert len(files) > 10, "found no command-line tools to check"
    cut, unfinished = [], []
    for path in files:
        source = path.read_text()
        if "description=__doc__" in source and 'description=__doc__.split("\\n\\n")[0]' not in source:
            cut.append(str(path.relative_to(PROJECT_ROOT)))
        paragraph = " ".join(ast.get_docstring(ast.parse(source)).split("\n\n")[0].split())
        if not paragraph.endswith("."):
            unfinished.append(f"{path.relative_to(PROJECT_ROOT)}: ...{paragraph[-40:]}")
    assert not cut, f"--help shows only the docstring's first line: {cut}"
    assert not unfinished, f"the docstring's first paragraph (the --help text) is not a whole sentence: {unfinished}"


def test_help_says_stage_is_required_and_lists_every_stage():
    from catdog_lab.cli import usage
    from catdog_lab.registry import STAGES
    line = next(line for line in usage().splitlines() if line.strip().startswith("stage "))
    assert line.split("required: ")[1].split(", ") == list(STAGES)
