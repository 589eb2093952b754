import json
from pathlib import Path

import pytest
from omegaconf import open_dict

from catdog_lab.report import referenced_files
from catdog_lab.stages.compare import compare, load_book

FAKE = {"scratch": 0.70, "augmented": 0.85, "features": 0.965, "features_augmented": 0.975, "finetune": 0.985}


@pytest.fixture
def fake_run(tiny_cfg, tmp_path):
    """Workspace metrics of the current recipe for every stage (no ledger: the runs recorded no seed)."""
    from catdog_lab.seeds import recipe_hash
    from catdog_lab.stages import plain
    metrics, reports = tmp_path / "metrics", tmp_path / "reports"
    metrics.mkdir(parents=True)
    (reports / "curves").mkdir(parents=True)
    with open_dict(tiny_cfg):
        tiny_cfg.data.split.validation = 500          # the real split's 1,000 validation images
    for stage, acc in FAKE.items():
        (metrics / f"{stage}.json").write_text(json.dumps(
            {"test/acc": acc, "test/loss": 0.3, "val/acc": acc - 0.01, "epochs": 3, "profile": "smoke",
             "wall_time_s": 12.5, "test_images": 1000, "recipe_hash": recipe_hash(plain(tiny_cfg), stage)}))
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
    assert summary["scratch/vs_book"] == pytest.approx(0.69 - book["scratch"]["acc"])     # validation vs validation
    md = (tmp_path / "reports/comparison.md").read_text()
    # one seed each (no ledger here): the interval of the mean is the binomial one of 1000 test images
    # (Wilson: 97.54-99.09%). The verdict's band: our images' 1.96 * sqrt(0.985 * 0.015 / 1000) = 0.75 pts
    # and the book's binomial noise on its
    # 1000 test images, 1.96 * sqrt(0.97 * 0.03 / 1000) = 1.06 pts: sqrt(0.75^2 + 1.06^2) = 1.30 pts
    assert ("| finetune | 1 | 98.5% | 97.5–99.1% | 97.5% | 97.0% (test) | 98.5% (test) | 97.2–99.8% | "
            "above (1 seed: seed spread not included) | +1.5 pts |") in md
    # scratch: the book's 71% is a validation figure, so our validation 69%: sqrt(2.87^2 + 2.81^2) = 4.01 pts
    assert ("| scratch | 1 | 70.0% | 67.1–72.8% | 69.0% | 71.0% (validation) | 69.0% (validation) | 65.0–73.0% | "
            "matches (1 seed: seed spread not included) | -2.0 pts |") in md
    assert "Our test accuracies are on the test split (1000 images): " in md
    assert summary["finetune/verdict"] == "above" and summary["scratch/verdict"] == "matches"
    assert summary["scratch/compared_on"] == "validation" and summary["finetune/compared_on"] == "test"
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
    assert "| finetune | 0 | not run yet |" in (tmp_path / "reports/comparison.md").read_text()


def test_no_mixed_rows_a_workspace_file_of_another_recipe_never_fills_a_row(fake_run, tmp_path):
    """Every column of a row comes from the current recipe's ledger entries; the workspace's metrics of
    another recipe (an older run) fill nothing: not the row's loss, epochs or time, nor a row of its own."""
    with open_dict(fake_run):
        fake_run.tracking.enabled = False
    for stage in ("augmented", "finetune"):           # the workspace holds another recipe's runs of these
        path = tmp_path / f"metrics/{stage}.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | {"recipe_hash": "0123456789ab", "epochs": 99,
                                                                   "test/loss": 9.9, "seconds_per_epoch": 99.0}))
    _ledger(fake_run, "augmented", [0.80, 0.82, 0.84], extra={"test/loss": 0.5, "epochs": 100})
    summary = compare(fake_run)
    md = (tmp_path / "reports/comparison.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| augmented |"))
    assert "| 3 | 82.0% ± 2.0 |" in row and "| 100 |" in row and "| 99 |" not in row
    assert "finetune/test_acc" not in summary and "| finetune | 0 | not run yet |" in md


def test_training_time_is_the_epochs_seconds_summed_across_resumes(fake_run, tmp_path):
    """A resumed run's wall_time_s counts only its last process; the epochs' seconds count them all."""
    from catdog_lab.stages.compare import build_rows, epoch_seconds
    # an entry of the format before `epoch_seconds`: 100 epochs at 131.867 s, 6867 s in the last process
    old = {"epochs": 100, "seconds_per_epoch": 131.867, "wall_time_s": 6867.0}
    assert epoch_seconds(old) == pytest.approx(13186.7)
    assert epoch_seconds(old | {"epoch_seconds": 13000.0}) == 13000.0
    _ledger(fake_run, "scratch", [0.70, 0.72], extra={"epochs": 10, "seconds_per_epoch": 60.0, "wall_time_s": 5.0})
    row = next(r for r in build_rows(fake_run, {}, load_book()) if r["stage"] == "scratch")
    assert row["epoch_seconds"] == pytest.approx(600.0)


needs_chromium = pytest.mark.skipif(__import__("catdog_lab.browser_check").browser_check.chromium() is None,
                                    reason="chromium is not installed")


def _real_png(path):
    from catdog_lab.plots import plt
    fig = plt.figure(figsize=(1, 1))
    fig.savefig(path, format="png")
    plt.close(fig)


@pytest.mark.integration
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


def _ledger(cfg, stage, accs, recipe_folder=None, vals=None, extra=None):
    from catdog_lab.seeds import recipe, recipe_hash
    from catdog_lab.stages import plain
    folder = Path(cfg.paths.seeds) / stage / (recipe_folder or recipe_hash(plain(cfg), stage))
    folder.mkdir(parents=True, exist_ok=True)
    for seed, (acc, val) in enumerate(zip(accs, vals or accs), start=1):
        (folder / f"seed-{seed}.json").write_text(json.dumps(
            {"seed": seed, "test/acc": acc, "val/acc": val, "test_images": 1000, "epochs": 3,
             "recipe": recipe(plain(cfg), stage)} | (extra or {})))


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
    # 95.1%: band sqrt((4.303 * 0.1 * sqrt(4/3))^2 + 1.34^2 + 1.06^2) = 1.78 pts, wholly under the book's 97%
    assert summary["finetune/verdict"] == "below"
    md = (tmp_path / "reports/comparison.md").read_text()
    assert "| augmented | 3 | 82.0% ± 2.0 | 77.0–87.0% | 82.0% | 82.0% (validation) | 82.0% (validation) |" in md


def test_a_stage_run_in_its_own_precision_is_its_own_row_and_says_so(fake_run, tmp_path):
    """The VGG stages in bf16 (`<stage>.precision`), the rest in fp32: each row from its own recipe's runs, and
    the settings table shows the precision where the stages differ in it."""
    with open_dict(fake_run):
        fake_run.tracking.enabled = False
    _ledger(fake_run, "features_augmented", [0.5, 0.5])              # the fp32 recipe's runs: not this config's
    with open_dict(fake_run):
        fake_run.features_augmented.precision = "bf16-mixed"
    _ledger(fake_run, "features_augmented", [0.96, 0.98])
    summary = compare(fake_run)
    assert summary["features_augmented/test_acc"] == pytest.approx(0.97)
    assert summary["features_augmented/seeds"] == 2
    assert summary["features/test_acc"] == 0.965                    # the fp32 workspace run, as before
    md = (tmp_path / "reports/comparison.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| stage | ") and "precision" in line)
    column = header.strip("|").split("|").index(" precision ")
    cells = {line.split("|")[1].strip(): line.strip("|").split("|")[column].strip()
             for line in md.splitlines() if line.count("|") == header.count("|") and "---" not in line}
    assert cells["features_augmented"] == "bf16-mixed" and cells["features"] == "32-true"


def test_compare_takes_the_edition_of_the_profile(fake_run, tmp_path):
    with open_dict(fake_run):
        fake_run.tracking.enabled = False
        fake_run.profile = "book2"
    compare(fake_run)
    md = (tmp_path / "reports/comparison.md").read_text()
    assert "book (2nd ed.) |" in md
    # the 2nd edition tests on 2000 images: band sqrt(0.75^2 + (1.96 * sqrt(0.985 * 0.015 / 2000))^2) = 0.92 pts
    assert ("| finetune | 1 | 98.5% | 97.5–99.1% | 97.5% | 98.5% (test) | 98.5% (test) | 97.6–99.4% | "
            "matches (1 seed: seed spread not included) | +0.0 pts |") in md


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
    # Wilson, by hand: z = 1.959964, z^2/n = 0.0038415; centre (0.96 + 0.0019207) / 1.0038415 = 0.958240,
    # half 1.959964 / 1.0038415 * sqrt(0.96 * 0.04 / 1000 + 3.841459 / 4e6) = 0.012249
    assert one["std"] is None and (one["low"], one["high"]) == pytest.approx((0.945991, 0.970489), abs=2e-6)
    assert "binomial (Wilson)" in one["interval_kind"]
    # 14 of 14 right: the normal approximation said 100.0-100.0%; Wilson says [14 / (14 + z^2), 1]
    perfect = summarise([1.0], test_images=14)
    assert (perfect["low"], perfect["high"]) == pytest.approx((14 / (14 + 1.959964 ** 2), 1.0), abs=1e-6)
    # two far-apart seeds: mean 0.8485, sd 0.034648, half 12.706 * 0.034648 / sqrt(2) = 0.3113 -> 0.537-1.160,
    # cut to [0, 1] (an accuracy above 100% is no interval)
    wide = summarise([0.873, 0.824])
    assert (wide["low"], wide["high"]) == pytest.approx((0.8485 - 0.31130, 1.0), abs=1e-4)


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


def test_the_test_split_size_is_the_runs_own(fake_run, tmp_path):
    """The count comes from each run's metrics (`test_images`), never a fixed 1000."""
    for stage in FAKE:
        path = tmp_path / "metrics" / f"{stage}.json"
        values = json.loads(path.read_text())
        values["test_images"] = 200 if stage != "scratch" else 100
        path.write_text(json.dumps(values))
    compare(fake_run)
    md = (tmp_path / "reports/comparison.md").read_text()
    assert ("Our test accuracies are on the test split (scratch: 100 images, augmented: 200 images, features: 200 "
            "images, features_augmented: 200 images, finetune: 200 images): ") in md
    for stage in FAKE:                                    # a run that did not record it: no number is made up
        path = tmp_path / "metrics" / f"{stage}.json"
        values = json.loads(path.read_text())
        del values["test_images"]
        path.write_text(json.dumps(values))
    compare(fake_run)
    md = (tmp_path / "reports/comparison.md").read_text()
    assert "Our test accuracies are on the test split: " in md and "1000" not in md


def _row(cfg, stage):
    from catdog_lab.stages.compare import build_rows
    return next(r for r in build_rows(cfg, {}, load_book()) if r["stage"] == stage)


def _band(values, images, book, book_images):
    """The verdict's band, computed here independently of seeds.py (scipy's quantiles)."""
    from statistics import mean, stdev

    from scipy.stats import norm, t
    m, n, z = mean(values), len(values), norm.ppf(0.975)
    seeds = t.ppf(0.975, n - 1) * stdev(values) * (1 + 1 / n) ** 0.5 if n > 1 else 0.0
    half = (seeds ** 2 + z ** 2 * m * (1 - m) / images + z ** 2 * book * (1 - book) / book_images) ** 0.5
    return m - half, m + half


def test_verdict_compares_our_validation_with_a_book_validation_figure(fake_run):
    """The 1st edition's augmented 82% is a validation figure: ours on validation decides, not on test."""
    _ledger(fake_run, "augmented", [0.85, 0.86, 0.87], vals=[0.60, 0.61, 0.62])
    row = _row(fake_run, "augmented")
    low, high = _band([0.60, 0.61, 0.62], 1000, 0.82, 1000)
    assert row["compared_on"] == "validation" and row["ours_compared"] == pytest.approx(0.61)
    assert (row["band_low"], row["band_high"]) == (pytest.approx(low), pytest.approx(high))
    assert row["band_high"] == pytest.approx(0.6728, abs=1e-3)       # 61% +- 6.28 pts: the book's 82% is far above
    assert row["verdict"] == "below" and row["difference"] == pytest.approx(0.61 - 0.82)
    assert row["test_acc"] == pytest.approx(0.86)                     # test accuracy still reported as such


def test_verdict_compares_test_with_a_book_test_figure(fake_run):
    _ledger(fake_run, "finetune", [0.950, 0.951, 0.952], vals=[0.99, 0.99, 0.99])
    row = _row(fake_run, "finetune")                                  # the 1st edition's 97% is a test figure
    low, high = _band([0.950, 0.951, 0.952], 1000, 0.97, 1000)
    assert row["compared_on"] == "test" and (row["band_low"], row["band_high"]) == (pytest.approx(low),
                                                                                     pytest.approx(high))
    assert row["band_high"] == pytest.approx(0.9688, abs=1e-3) and row["verdict"] == "below"
    # a prediction interval for one run, not the mean's interval: wider by sqrt(1 + n) = 2 with 3 seeds
    assert row["high"] - row["test_acc"] < (row["band_high"] - row["test_acc"]) / 2


def test_verdict_with_one_seed_says_the_seed_spread_is_not_included(fake_run):
    from catdog_lab.stages.compare import markdown_table
    _ledger(fake_run, "features", [0.955])
    row = _row(fake_run, "features")
    low, high = _band([0.955], 1000, 0.90, 1000)                      # binomial noise of both sides only
    assert (row["band_low"], row["band_high"]) == (pytest.approx(low), pytest.approx(high))
    assert row["verdict"] == "above" and not row["seed_spread"]
    assert "above (1 seed: seed spread not included)" in markdown_table([row])
    _ledger(fake_run, "features", [0.955, 0.96])
    row = _row(fake_run, "features")
    assert row["seed_spread"] and "seed spread not included" not in markdown_table([row])


def test_prediction_band_by_hand():
    from catdog_lab.seeds import prediction_band
    band = prediction_band([0.80, 0.82, 0.84], 1000, 0.82, 1000)
    # seeds: 4.303 * 0.02 * sqrt(4/3) = 0.09937; ours: 1.96 * sqrt(0.82 * 0.18 / 1000) = 0.02381; book: the same
    assert band["parts"]["seeds"] == pytest.approx(0.099375, abs=1e-5)
    assert band["parts"]["our_images"] == pytest.approx(0.023812, abs=1e-5) == band["parts"]["book_images"]
    assert band["half"] == pytest.approx((0.099375 ** 2 + 2 * 0.023812 ** 2) ** 0.5, abs=1e-5)
    assert prediction_band([0.9], 1000, None, 1000)["low"] is None
    # a 100% mean: the band is cut at 100% (it said 97.2-102.8%)
    cut = prediction_band([1.0], 14, 0.975, 2000)
    assert cut["high"] == 1.0 and cut["low"] == pytest.approx(1 - 1.959964 * (0.975 * 0.025 / 2000) ** 0.5, abs=1e-6)


def test_the_introduction_speaks_of_the_book_only_on_the_books_data():
    from catdog_lab.stages.compare import introduction
    rows = [{"stage": "scratch", "test_images": 21}]
    ours, books = introduction(rows, on_book_data=False), introduction(rows, on_book_data=True)
    assert "book" not in ours.lower() and "verdict" not in ours and "VGG16" not in ours
    assert "book_accuracy.yaml" in books and "*matches*" in books
    assert "test split (21 images)" in ours and "test split (21 images)" in books


def test_book_data_is_read_from_the_split_report_else_from_the_config(tmp_path):
    from catdog_lab.stages.compare import is_book_data
    kaggle = {"source": {"layout": "kaggle"}, "classes": None}
    folders = {"source": {"layout": "folders"}, "classes": None}
    # the split's report decides when there is one, whatever the config says
    (tmp_path / "report.json").write_text(json.dumps({"layout": "folders", "classes": ["bird", "cat", "dog"]}))
    assert not is_book_data(tmp_path, kaggle)
    (tmp_path / "report.json").write_text(json.dumps({"layout": "kaggle", "classes": ["cat", "dog"]}))
    assert is_book_data(tmp_path, folders)
    # no report (a split copied without it): own photos are not taken for the book's
    empty = tmp_path / "copied"
    empty.mkdir()
    assert not is_book_data(empty, folders)
    assert not is_book_data(empty, {"source": {"layout": "kaggle"}, "classes": ["dog", "cat"]})
    assert is_book_data(empty, kaggle)
    assert is_book_data(empty, {"source": {"layout": "kaggle"}, "classes": ["cat", "dog"]})
    assert is_book_data(empty)          # nothing to go on: a split written before layouts existed

def _mean_row(stage, acc, n=3):
    return {"stage": stage, "test_acc": acc, "n": n}


def test_the_ladder_is_said_plainly_met_not_met_or_not_measured():
    from catdog_lab.stages.compare import ladder, rung_sentence
    rungs = ladder([_mean_row("scratch", 0.727), _mean_row("augmented", 0.840, 1), _mean_row("features", 0.959),
                    _mean_row("features_augmented", 0.955, 1)])
    assert [(r["lower"], r["upper"], r["status"]) for r in rungs] == [
        ("scratch", "augmented", "met"), ("features", "features_augmented", "not met"),
        ("features_augmented", "finetune", "not measured")]
    assert rung_sentence(rungs[0]) == "`scratch` < `augmented`: **met** (72.7% vs 84.0%, +11.3 pts; 3 and 1 seed)"
    assert rung_sentence(rungs[1], markup=False) == ("features <= features_augmented: not met (95.9% vs 95.5%, "
                                                     "-0.4 pts; 3 and 1 seed)")
    assert rung_sentence(rungs[2]) == "`features_augmented` <= `finetune`: not measured (finetune not run yet)"
    # equal means: the transfer rungs allow a tie, scratch < augmented does not
    tie = ladder([_mean_row(s, 0.9) for s in ("scratch", "augmented", "features", "features_augmented", "finetune")])
    assert [r["status"] for r in tie] == ["not met", "met", "met"]
    assert ladder([])[0]["why"] == "scratch and augmented not run yet"


def test_compare_reports_the_ladder_in_markdown_metrics_and_html(fake_run, tmp_path):
    (tmp_path / "metrics/finetune.json").unlink()
    with open_dict(fake_run):
        fake_run.tracking.enabled = False
    summary = compare(fake_run)
    md = (tmp_path / "reports/comparison.md").read_text()
    assert "- `scratch` < `augmented`: **met** (70.0% vs 85.0%, +15.0 pts; 1 and 1 seed)" in md
    assert "- `features_augmented` <= `finetune`: not measured (finetune not run yet)" in md
    assert summary["ladder/features-features_augmented"] == "met"
    assert summary["ladder/features_augmented-finetune"] == "not measured"
    page = (tmp_path / "reports/index.html").read_text()
    assert "<li>features &lt;= features_augmented: met (96.5% vs 97.5%, +1.0 pts; 1 and 1 seed)</li>" in page
    assert "Our test accuracies are on the test split (1000 images)" in page
