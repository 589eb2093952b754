import json

import pytest
from omegaconf import open_dict

from catdog_lab.report import referenced_files
from catdog_lab.stages.compare import compare, load_book

FAKE = {"scratch": 0.70, "augmented": 0.85, "features": 0.965, "features_augmented": 0.975, "finetune": 0.985}


@pytest.fixture
def fake_run(tiny_cfg, tmp_path):
    metrics, reports = tmp_path / "metrics", tmp_path / "reports"
    metrics.mkdir(parents=True)
    (reports / "curves").mkdir(parents=True)
    for stage, acc in FAKE.items():
        (metrics / f"{stage}.json").write_text(json.dumps(
            {"test/acc": acc, "test/loss": 0.3, "val/acc": acc - 0.01, "epochs": 3, "profile": "smoke",
             "wall_time_s": 12.5}))
        (reports / "curves" / f"{stage}.png").write_bytes(b"\x89PNG fake")
    (reports / "figures").mkdir()
    (reports / "figures" / "primer.png").write_bytes(b"\x89PNG fake")
    (reports / "figures" / "index.json").write_text(json.dumps(
        [{"file": "primer.png", "title": "Primer", "caption": "conv on a cat"},
         {"file": "missing.png", "title": "never written"}]))
    return tiny_cfg


def test_compare_writes_table_chart_metrics_and_report(fake_run, tmp_path):
    summary = compare(fake_run)
    book = load_book()["first_edition"]
    assert summary["finetune/test_acc"] == 0.985
    assert summary["scratch/vs_book"] == pytest.approx(0.70 - book["scratch"]["acc"])
    md = (tmp_path / "reports/comparison.md").read_text()
    assert "| finetune | 98.5% | 97.0% (test) | +1.5 pts |" in md
    assert "| scratch | 70.0% | 71.0% (validation) | -1.0 pts |" in md
    assert (tmp_path / "reports/accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "metrics/compare.json").read_text()) == summary
    html = tmp_path / "reports/index.html"
    refs = referenced_files(html)
    assert all(p.exists() for p in refs), [p for p in refs if not p.exists()]
    names = {p.name for p in refs}
    assert {"accuracy.png", "primer.png", "finetune.png"} <= names and "missing.png" not in names


def test_compare_logs_into_the_parent_run(fake_run):
    from mlflow.tracking import MlflowClient
    from catdog_lab.tracking import stage_run
    with stage_run(fake_run, "scratch"):             # a stage run creates the pipeline's parent
        pass
    compare(fake_run)
    client = MlflowClient(tracking_uri=fake_run.tracking.uri)
    exp = client.get_experiment_by_name(fake_run.tracking.experiment)
    parents = client.search_runs([exp.experiment_id], "tags.run_kind = 'pipeline'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.metrics["finetune.test_acc"] == pytest.approx(0.985)
    files = {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")}
    assert {"comparison/comparison.md", "comparison/accuracy.png", "comparison/index.html"} <= files
    child = client.search_runs([exp.experiment_id], "tags.stage = 'scratch'")[0]
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id


def test_compare_with_some_stages_missing(fake_run, tmp_path):
    (tmp_path / "metrics/finetune.json").unlink()
    with open_dict(fake_run):
        fake_run.tracking.enabled = False
    summary = compare(fake_run)
    assert "finetune/test_acc" not in summary and "scratch/test_acc" in summary


needs_chromium = pytest.mark.skipif(__import__("catdog_lab.browser_check").browser_check.chromium() is None,
                                    reason="chromium is not installed")


def _real_png(path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(1, 1))
    fig.savefig(path, format="png")
    plt.close(fig)


@needs_chromium
def test_report_opens_in_a_real_browser_with_every_image(fake_run, tmp_path):
    from catdog_lab.browser_check import check_page
    for png in list((tmp_path / "reports").rglob("*.png")):
        _real_png(png)                                       # the fakes above are not decodable
    compare(fake_run)
    result = check_page(tmp_path / "reports/index.html", screenshot=tmp_path / "shot.png")
    assert result["images"] == 7 and result["broken"] == [] and result["console_errors"] == []
    assert (tmp_path / "shot.png").stat().st_size > 1000
    # the check can fail: a missing image is caught
    (tmp_path / "reports/curves/scratch.png").unlink()
    result = check_page(tmp_path / "reports/index.html")
    assert result["broken"] == ["curves/scratch.png"]


def test_readme_results_section_is_replaced_by_the_generated_table(tmp_path):
    from catdog_lab.report import update_readme
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold\n<!-- results:end -->\nouttro\n")
    comparison = tmp_path / "comparison.md"
    comparison.write_text("# Accuracy comparison\n\n| stage | acc |\n|---|---|\n| scratch | 70% |\n")
    update_readme(readme, comparison, note="measured here")
    assert readme.read_text() == ("intro\n<!-- results:start -->\nmeasured here\n\n| stage | acc |\n|---|---|\n"
                                  "| scratch | 70% |\n<!-- results:end -->\nouttro\n")
