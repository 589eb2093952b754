import json
from pathlib import Path

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
    # one seed each (no ledger here): the interval is the binomial one of 1000 test images,
    # 1.96 * sqrt(0.985 * 0.015 / 1000) = 0.75 pts and 1.96 * sqrt(0.7 * 0.3 / 1000) = 2.84 pts
    assert "| finetune | 1 | 98.5% | 97.7–99.3% | 97.0% (test) | above | +1.5 pts |" in md
    assert "| scratch | 1 | 70.0% | 67.2–72.8% | 71.0% (validation) | matches | -1.0 pts |" in md
    assert summary["finetune/verdict"] == "above" and summary["scratch/verdict"] == "matches"
    assert (tmp_path / "reports/accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "metrics/compare.json").read_text()) == summary
    html = tmp_path / "reports/index.html"
    refs = referenced_files(html)
    assert all(p.exists() for p in refs), [p for p in refs if not p.exists()]
    names = {p.name for p in refs}
    assert {"accuracy.png", "primer.png", "finetune.png"} <= names and "missing.png" not in names


def test_compare_logs_into_the_parent_run(fake_run):
    from mlflow.tracking import MlflowClient
    from catdog_lab.stages import tracking_for
    from catdog_lab.tracking import stage_run
    with stage_run(tracking_for(fake_run), "scratch"):             # a stage run creates the pipeline's parent
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
    from catdog_lab.plots import plt
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


def _ledger(cfg, stage, accs, recipe_folder=None):
    from catdog_lab.seeds import recipe_hash
    from catdog_lab.stages import plain
    folder = Path(cfg.paths.seeds) / stage / (recipe_folder or recipe_hash(plain(cfg), stage))
    folder.mkdir(parents=True, exist_ok=True)
    for seed, acc in enumerate(accs, start=1):
        (folder / f"seed-{seed}.json").write_text(json.dumps(
            {"seed": seed, "test/acc": acc, "val/acc": acc, "test_images": 1000, "epochs": 3}))


def test_compare_aggregates_seeds_of_the_current_recipe_only(fake_run, tmp_path):
    with open_dict(fake_run):
        fake_run.tracking.enabled = False
    _ledger(fake_run, "augmented", [0.80, 0.82, 0.84])
    _ledger(fake_run, "augmented", [0.10, 0.10], recipe_folder="0123456789ab")   # another recipe: ignored
    _ledger(fake_run, "finetune", [0.950, 0.951, 0.952])
    summary = compare(fake_run)
    # mean 0.82, sd 0.02, t(0.975, 2 dof) = 4.303: half-width 4.303 * 0.02 / sqrt(3) = 0.0497
    assert summary["augmented/test_acc"] == pytest.approx(0.82)
    assert summary["augmented/test_std"] == pytest.approx(0.02)
    assert summary["augmented/seeds"] == 3
    assert summary["augmented/low"] == pytest.approx(0.82 - 0.049686, abs=1e-5)
    assert summary["augmented/high"] == pytest.approx(0.82 + 0.049686, abs=1e-5)
    assert summary["augmented/verdict"] == "matches"                    # book: 82%
    # 95.1% +- 0.25 pts lies wholly under the book's 97%
    assert summary["finetune/verdict"] == "below"
    md = (tmp_path / "reports/comparison.md").read_text()
    assert "| augmented | 3 | 82.0% ± 2.0 | 77.0–87.0% | 82.0% (validation) | matches |" in md


def test_compare_takes_the_edition_of_the_profile(fake_run, tmp_path):
    with open_dict(fake_run):
        fake_run.tracking.enabled = False
        fake_run.profile = "book2"
    compare(fake_run)
    md = (tmp_path / "reports/comparison.md").read_text()
    assert "book (2nd ed.) |" in md
    assert "| finetune | 1 | 98.5% | 97.7–99.3% | 98.5% (test) | matches | +0.0 pts |" in md


@pytest.mark.parametrize("low, high, book, expected", [
    (0.80, 0.84, 0.82, "matches"), (0.80, 0.84, 0.80, "matches"), (0.80, 0.84, 0.79, "above"),
    (0.80, 0.84, 0.85, "below"), (None, None, 0.85, "–"), (0.80, 0.84, None, "–")])
def test_verdict(low, high, book, expected):
    from catdog_lab.seeds import verdict
    assert verdict({"low": low, "high": high}, book) == expected


def test_summary_of_seeds_by_hand():
    from catdog_lab.seeds import summarise
    two = summarise([0.70, 0.72])
    # sd = 0.01414, t(0.975, 1) = 12.706: half-width 12.706 * 0.01414 / sqrt(2) = 0.12706
    assert two["std"] == pytest.approx(0.0141421, abs=1e-6)
    assert two["high"] - two["mean"] == pytest.approx(0.127062, abs=1e-5)
    one = summarise([0.96], test_images=1000)
    assert one["std"] is None and one["high"] - one["mean"] == pytest.approx(1.959964 * (0.96 * 0.04 / 1000) ** 0.5)
    assert "binomial" in one["interval_kind"]


def test_settings_table_with_one_stage_is_a_sentence_not_a_broken_table():
    from catdog_lab.report import _md_table_to_html
    from catdog_lab.stages.compare import settings_table
    one = [{"stage": "features", "settings": {"lr": 1e-3, "epochs": 20}}]
    assert settings_table(one) == "None: only one stage was compared."
    assert _md_table_to_html(settings_table(one)) == "<p>None: only one stage was compared.</p>"
    same = one + [{"stage": "scratch", "settings": {"lr": 1e-3, "epochs": 20}}]
    assert settings_table(same).startswith("None: every stage has the same model, epochs, lr")
    differ = one + [{"stage": "scratch", "settings": {"lr": 1e-4, "epochs": 20}}]
    assert settings_table(differ).splitlines()[:3] == ["| stage | lr |", "|---|---|", "| features | 0.001 |"]
    assert "<td>0.0001</td>" in _md_table_to_html(settings_table(differ))
