"""Any folder of class folders, any number of classes: discovery, the split's report and its errors."""
import csv
import json

import pytest
import torch

from catdog_lab.config import compose
from catdog_lab.data.datamodule import load_cached_split
from catdog_lab.data.discover import discover, natural_key
from catdog_lab.data.split import make_split
from catdog_lab.errors import ConfigError, DataError
from catdog_lab.stages.split import split
from conftest import make_class_folders, make_dataset, tiny_overrides

COUNTS = {"train": 4, "validation": 2, "test": 2}


def _split(root, tmp_path, counts=COUNTS, **kwargs):
    return make_split(root, counts, seed=0, image_size=48, max_pixels=10**7, cache_dir=tmp_path / "cache",
                      layout="folders", **kwargs)


def test_class_folders_with_any_names_give_sorted_classes_and_labels(tmp_path):
    root = make_class_folders(tmp_path / "photos", ["zebra", "aardvark", "mole"], per_class=9)
    result = _split(root, tmp_path)
    assert result["report"]["classes"] == ["aardvark", "mole", "zebra"]
    assert result["report"]["counts"]["train"] == {"aardvark": 4, "mole": 4, "zebra": 4}
    train = load_cached_split(tmp_path / "cache", "train")
    assert train["classes"] == ["aardvark", "mole", "zebra"]
    assert sorted(train["labels"].tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    for row, label in zip((r for r in result["manifest"] if r["split"] == "train"), train["labels"].tolist()):
        assert row["file"].split("/")[0] == row["class"] == train["classes"][label]
    assert any("/deeper/" in row["file"] for row in result["manifest"])      # images at any depth


def test_data_classes_picks_and_orders_and_lists_the_rest(tmp_path):
    root = make_class_folders(tmp_path / "photos", ["cats", "dogs", "birds"], per_class=8)
    result = _split(root, tmp_path, classes=["dogs", "cats"])
    assert result["report"]["classes"] == ["dogs", "cats"]
    assert result["report"]["not_classes"] == [{"folder": "birds", "reason": "not in data.classes"}]
    assert load_cached_split(tmp_path / "cache", "test")["classes"] == ["dogs", "cats"]
    with pytest.raises(ConfigError, match=r"data.classes: no folder 'fish' under .*; folders: birds, cats, dogs"):
        _split(root, tmp_path, classes=["cats", "fish"])


def test_nothing_is_left_out_silently(tmp_path, capsys):
    root = make_class_folders(tmp_path / "photos", ["a", "b", "c"], per_class=9)
    (root / "empty").mkdir()
    (root / "notes.txt").write_text("not a photo")
    (root / "a" / "readme.md").write_text("not a photo either")
    (root / "c" / "copy.jpg").write_bytes((root / "a" / "0.jpg").read_bytes())   # one photo, two classes
    (root / ".DS_Store").write_text("hidden: not data")
    elsewhere = make_class_folders(tmp_path / "elsewhere", ["x"], per_class=2) / "x"
    (root / "b" / "linked").symlink_to(elsewhere, target_is_directory=True)     # not followed, but listed
    (root / "b" / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")                # points at nothing
    result = _split(root, tmp_path, counts={"train": 3, "validation": 2, "test": 2})
    report = result["report"]
    assert report["classes"] == ["a", "b", "c"]
    assert report["not_classes"] == [{"folder": "empty", "reason": "no images"}]
    assert report["outside_class_folders"] == ["notes.txt"]
    assert [row["file"] for row in report["not_images"]] == ["a/readme.md"]
    assert report["under_two_classes"][0]["files"] == ["a/0.jpg", "c/copy.jpg"]
    assert report["links_not_followed"] == [
        {"file": "b/gone.jpg", "class": "b", "reason": "a link to nothing (broken)"},
        {"file": "b/linked", "class": "b", "reason": "a link to a folder (not followed)"}]
    assert {"a/0.jpg", "c/copy.jpg"} <= {row["file"] for row in result["skipped"]}
    assert not {"a/0.jpg", "c/copy.jpg"} & {row["file"] for row in result["manifest"]}
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("[split] left out: 1 folder(s) not a class (empty: no images); 1 file(s) outside the "
                           "class folders; 1 non-image file(s); 2 link(s) not followed; 2 file(s) of 1 photo(s) "
                           "found under two or more")


def test_empty_class_named_in_data_classes_stops(tmp_path):
    root = make_class_folders(tmp_path / "photos", ["a", "b"], per_class=8)
    (root / "c").mkdir()
    (root / "c" / "notes.txt").write_text("no photos here")
    with pytest.raises(DataError, match=r"class 'c': no images under"):
        _split(root, tmp_path, classes=["a", "b", "c"])


def test_too_small_class_names_it_its_count_and_the_fractions_key(tmp_path):
    root = make_class_folders(tmp_path / "photos", ["a", "b", "c"], per_class=9)
    for i in range(4):
        (root / "b" / f"{i}.jpg").unlink(missing_ok=True)
    with pytest.raises(DataError, match=r"class 'b': only \d images .* asks for 8 .*data.split.fractions="):
        _split(root, tmp_path)
    result = _split(root, tmp_path, counts={"train": 0.6, "validation": 0.2, "test": 0.2})   # fractions fit
    assert result["report"]["counts"]["train"]["b"] < result["report"]["counts"]["train"]["a"]


def test_one_class_is_not_a_classifier(tmp_path):
    root = make_class_folders(tmp_path / "photos", ["only"], per_class=4)
    with pytest.raises(DataError, match="1 class"):
        discover(root, "folders")


def test_a_zip_style_single_wrapping_folder_is_looked_through(tmp_path):
    make_class_folders(tmp_path / "photos" / "wrapped", ["x", "y"], per_class=2)
    assert discover(tmp_path / "photos", "folders").classes == ("x", "y")


def test_a_lone_class_folder_with_subfolders_is_a_class_not_a_wrapper(tmp_path):
    # a held-out folder of cats only, photos in cats/ and cats/sub/: --evaluate read it as one class `sub`
    root = make_class_folders(tmp_path / "held", ["cats"], per_class=2)
    make_class_folders(root / "cats" / "sub", ["deeper"], per_class=2)
    found = discover(root, "folders", min_classes=1, known=("birds", "cats", "dogs"))
    assert found.classes == ("cats",) and len(found.candidates) == 4
    assert discover(root, "folders", min_classes=1).classes == ("cats",)       # one folder inside: no wrapper
    with pytest.raises(DataError, match=r"1 class\(es\) found \(cats\); a classifier needs at least two"):
        discover(root, "folders")
    # a wrapper around one class folder of the model's is still looked through
    wrapped = make_class_folders(tmp_path / "zipped" / "heldout", ["dogs"], per_class=2).parent
    assert discover(wrapped, "folders", min_classes=1, known=("cats", "dogs")).classes == ("dogs",)


def test_numbered_names_keep_their_numeric_order():
    names = ["cat.10.jpg", "cat.9.jpg", "cat.100.jpg", "cat.2.jpg"]
    assert sorted(names, key=natural_key) == ["cat.2.jpg", "cat.9.jpg", "cat.10.jpg", "cat.100.jpg"]


def test_same_photos_in_renamed_class_folders_split_like_the_kaggle_layout(tmp_path):
    kaggle = make_dataset(tmp_path / "kaggle", per_class=12)
    for label, folder in (("cat", "felines"), ("dog", "canines")):
        (tmp_path / "folders" / folder).mkdir(parents=True)
        for path in kaggle.glob(f"{label}.*.jpg"):
            (tmp_path / "folders" / folder / path.name).symlink_to(path)
    a = make_split(kaggle, COUNTS, seed=5, image_size=32, max_pixels=10**7, cache_dir=tmp_path / "a")
    b = make_split(tmp_path / "folders", COUNTS, seed=5, image_size=32, max_pixels=10**7, cache_dir=tmp_path / "b",
                   layout="folders", classes=["felines", "canines"])
    assert [(r["sha256"], r["split"]) for r in a["manifest"]] == [(r["sha256"], r["split"]) for r in b["manifest"]]
    assert (tmp_path / "a/train.images.npy").read_bytes() == (tmp_path / "b/train.images.npy").read_bytes()


def test_split_stage_with_data_folder_config(tmp_path):
    root = make_class_folders(tmp_path / "photos", ["ants", "bees", "wasps"], per_class=10)
    cfg = compose(tiny_overrides(tmp_path, root, ["data=folder", f"data.source.path={root}",
                                                  "data.split.fractions=[0.6,0.2,0.2]"]))
    report = split(cfg)
    assert report["classes"] == ["ants", "bees", "wasps"] and report["layout"] == "folders"
    assert report["counts"]["train"] == {"ants": 6, "bees": 6, "wasps": 6}
    saved = json.loads((tmp_path / "data/split/report.json").read_text())
    assert saved["counts"] == report["counts"]
    rows = list(csv.DictReader(open(tmp_path / "data/split/manifest.csv")))
    assert {row["class"] for row in rows} == {"ants", "bees", "wasps"}
    from mlflow.tracking import MlflowClient  # the split run says the real split
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    [run] = client.search_runs([client.get_experiment_by_name(cfg.tracking.experiment).experiment_id],
                               "tags.stage = 'split'")
    assert run.info.run_name == "0 split: 3 classes, 6/2/2 per class"
    assert run.data.metrics["images/test/bees"] == 2 and run.data.tags["classes"] == "ants,bees,wasps"


@pytest.mark.parametrize("override, message", [
    ("data.split.fractions=[0.7,0.5,0.1]", "data.split.fractions: must be null or [train, validation, test]"),
    ("data.classes=[ants]", "data.classes: must be null (every class folder) or a list of at least two"),
    ("data.source.layout=pets", "data.source.layout: must be one of kaggle, folders, got 'pets'"),
])
def test_bad_data_values_name_the_key(tmp_path, override, message):
    root = make_class_folders(tmp_path / "photos", ["ants", "bees"], per_class=2)
    cfg = compose(tiny_overrides(tmp_path, root, ["data=folder", f"data.source.path={root}", override]))
    with pytest.raises(ConfigError) as info:
        split(cfg)
    assert str(info.value).startswith(message)


def test_folder_config_without_a_path_says_so(tmp_path):
    cfg = compose(tiny_overrides(tmp_path, tmp_path, ["data=folder", "data.source.path=null"]))
    with pytest.raises(ConfigError, match="data.source.path: null; set it to the folder"):
        split(cfg)


def test_generated_photos_of_n_classes_differ_by_class():
    from catdog_lab.data.toy import toy_photo
    classes = tuple("abcde")
    means = [torch.tensor(list(toy_photo(c, 0, 40, 40, classes).getdata())).float().mean(0) for c in classes]
    assert len({tuple(m.round().tolist()) for m in means}) == 5


def test_class_metrics_by_hand_and_the_macro_f1_over_the_classes_that_occur():
    from catdog_lab.models.outputs import class_metrics
    # rows true, columns predicted: a 2 right 1 said b; b 1 said a, 2 right; c absent and never said
    figures = class_metrics(torch.tensor([[2, 1, 0], [1, 2, 0], [0, 0, 0]]), ("a", "b", "c"))
    assert figures["acc"] == pytest.approx(4 / 6, abs=1e-6)
    assert figures["per_class"]["a"] == {"precision": pytest.approx(2 / 3, abs=1e-6),
                                         "recall": pytest.approx(2 / 3, abs=1e-6), "f1": pytest.approx(2 / 3, abs=1e-6),
                                         "images": 2 + 1}
    assert figures["macro_f1"] == pytest.approx(2 / 3, abs=1e-6)            # (2/3 + 2/3) / 2, c left out
    # c said once for an a: it occurs (as predicted), with F1 0
    said_c = class_metrics(torch.tensor([[2, 0, 1], [1, 2, 0], [0, 0, 0]]), ("a", "b", "c"))
    a_f1, b_f1 = 2 * (2 / 3) * (2 / 3) / (4 / 3), 2 * (2 / 3) * 1 / (5 / 3)
    assert said_c["macro_f1"] == pytest.approx((a_f1 + b_f1 + 0) / 3, abs=1e-6)
