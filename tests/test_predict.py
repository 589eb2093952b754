import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict
from PIL import Image

from catdog_lab.config import compose
from catdog_lab.data.images import open_rgb
from catdog_lab.data.split import resize_to_tensor
from catdog_lab.errors import UserError
from catdog_lab.models.factory import load_model
from catdog_lab.predict import Predictor, _gradcam_layer, expand_inputs
from catdog_lab.stages.train import train
from conftest import make_photo

EXE = Path(sys.executable).parent / "catdog-predict"


@pytest.fixture
def scratch_model(tiny_split, tmp_path) -> Path:
    with open_dict(tiny_split):
        tiny_split.tracking.enabled = False
    train(tiny_split, "scratch")
    return tmp_path / "models/scratch.pt"


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.mark.integration
def test_predict_prints_table_saves_gradcam_and_reports_bad_files(scratch_model, tmp_path):
    good = make_photo(tmp_path / "new" / "photo.jpg", "cat", 999, size=(80, 60))
    bad = tmp_path / "new" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    proc = _run("--model", scratch_model, "--gradcam", "--out", tmp_path / "overlays", good, bad, tmp_path / "nope.jpg")
    assert proc.returncode == 1                           # some files failed, the good one is still classified
    header, line = proc.stdout.strip().splitlines()
    assert header.split() == ["file", "label", "probability", "p(cat)", "p(dog)"]
    assert line.startswith(f"{good} ") and line.split()[1] in ("cat", "dog") and line.rstrip().endswith(".png")
    assert len(list((tmp_path / "overlays").glob("photo_gradcam_*.png"))) == 1
    errors = proc.stderr.strip().splitlines()
    assert any(e.startswith(f"error: {bad}: unreadable") or e.startswith(f"error: {bad}: not an image") for e in errors)
    assert f"error: {tmp_path / 'nope.jpg'}: no such file" in errors


@pytest.mark.integration
def test_predict_folders_globs_formats_and_exit_codes(scratch_model, tmp_path):
    photos = tmp_path / "photos"
    files = [make_photo(photos / "a" / f"cat.{i}.jpg", "cat", 500 + i) for i in range(3)]
    files += [make_photo(photos / "b" / "deep" / f"dog.{i}.png", "dog", 600 + i, fmt="PNG") for i in range(2)]
    (photos / "notes.txt").write_text("not an image, and not picked from a folder")
    (photos / "a" / "zero.jpg").write_bytes(b"")

    found, errors = expand_inputs([photos / "a", str(photos / "b" / "**" / "*.png"), str(tmp_path / "none*.jpg")])
    assert sorted(found) == sorted(files[:3] + [photos / "a" / "zero.jpg"] + files[3:]) and len(found) == 6
    assert errors == [f"{tmp_path / 'none*.jpg'}: no file matches"]
    # a folder's other files are named, not passed over without a word (hidden ones aside)
    (photos / ".DS_Store").write_bytes(b"\0")
    skipped = []
    expand_inputs([photos], skipped)
    assert skipped == [f"{photos}: 1 file skipped, not images by its suffix (.txt); "
                       "read: .bmp, .gif, .jpeg, .jpg, .png, .webp"]

    proc = _run("--model", scratch_model, "--format", "json", "--batch-size", "2", photos)
    assert proc.returncode == 1, proc.stderr
    assert f"note: {photos}: 1 file skipped, not images by its suffix (.txt)" in proc.stderr
    rows = json.loads(proc.stdout)
    assert {r["file"] for r in rows} == {str(f) for f in files} | {str(photos / "a" / "zero.jpg")}
    zero = next(r for r in rows if r["file"].endswith("zero.jpg"))
    assert zero["label"] is None and zero["error"] == "empty file (0 bytes)"
    # batches of 2 give the same probabilities as one image at a time
    net, _ = load_model(scratch_model)
    for r in rows:
        if r["error"] is None:
            x = resize_to_tensor(open_rgb(Path(r["file"]), 10 ** 8)[0], 48).unsqueeze(0).float()
            assert r["p_dog"] == pytest.approx(float(torch.sigmoid(net(x))[0]), abs=1e-5)
            assert r["probability"] == pytest.approx(r["p_dog"] if r["label"] == "dog" else 1 - r["p_dog"])
            assert r["p_cat"] + r["p_dog"] == pytest.approx(1.0, abs=1e-6)

    proc = _run("--model", scratch_model, "--format", "csv", str(photos / "**" / "*.jpg"))
    assert proc.returncode == 1
    table = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [r["file"] for r in table] == sorted(str(p) for p in photos.rglob("*.jpg"))
    assert list(table[0]) == ["file", "label", "probability", "p_cat", "p_dog", "error"]   # no --gradcam, no column
    ok = _run("--model", scratch_model, "--format", "csv", *files)
    assert ok.returncode == 0 and ok.stderr == "" and len(ok.stdout.strip().splitlines()) == 1 + len(files)
    small = _run("--model", scratch_model, "--max-pixels", 100, files[0])
    assert small.returncode == 1 and "too large: 64x56 > data.max_image_pixels=100" in small.stderr


def test_exif_orientation_is_applied_before_resizing(scratch_model, tmp_path):
    """A photo stored sideways with EXIF Orientation=6 (rotate 90° clockwise to view) decodes upright."""
    upright = make_photo(tmp_path / "upright.jpg", "dog", 7, size=(90, 60))
    image = Image.open(upright)
    stored = image.transpose(Image.Transpose.ROTATE_90)          # what a phone writes: pixels sideways ...
    exif = Image.Exif()
    exif[0x0112] = 6                                             # ... plus "rotate 90° CW to display"
    sideways = tmp_path / "sideways.jpg"
    stored.save(sideways, format="JPEG", exif=exif.tobytes(), quality=95)
    decoded, _ = open_rgb(sideways, 10 ** 8)
    assert decoded.size == (90, 60)
    a = torch.from_numpy(np.asarray(decoded, dtype="float32"))
    b = torch.from_numpy(np.asarray(Image.open(upright).convert("RGB"), dtype="float32"))
    assert (a - b).abs().mean() < 6            # same picture (JPEG re-encoding noise only), not a rotated one
    predictor = Predictor.from_file(scratch_model)
    p_up, p_side = (r["p_dog"] for r in predictor.predict([upright, sideways]))
    assert p_side == pytest.approx(p_up, abs=0.02)


@pytest.mark.integration
def test_predict_missing_model_is_one_line(tmp_path):
    proc = _run("--model", tmp_path / "none.pt", "x.jpg")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'none.pt'} not found: train that stage first (dvc repro)"


def _booby_trapped(path: Path, marker: Path) -> Path:
    class Shell:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))
    torch.save({"arch": {"kind": "convnet"}, "state_dict": Shell()}, path)
    return path


def test_a_file_that_is_not_a_stage_model_is_one_line_naming_what_is_wrong(tmp_path):
    from catdog_lab.models.factory import build_from_arch, save_model
    arch = {"kind": "convnet", "image_size": 48, "dropout": 0.0}
    good = tmp_path / "good.pt"
    save_model(good, "scratch", arch, build_from_arch(arch))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    bare = tmp_path / "state_dict.pt"
    torch.save(build_from_arch(arch).state_dict(), bare)
    wrong_classes = tmp_path / "three_classes.pt"
    bundle = torch.load(good, weights_only=True)
    torch.save({**bundle, "classes": ["a", "b", "c"]}, wrong_classes)
    photo = make_photo(tmp_path / "photo.jpg", "cat", 1)
    marker = tmp_path / "pwned"
    cases = {
        _booby_trapped(tmp_path / "evil.pt", marker): r"refused by torch.load\(weights_only=True\): it holds objects "
                                                      r"other than tensors \(GLOBAL posix\.system\)",
        tmp_path: r"is a folder, not a PyTorch file",
        photo: r"is not a readable PyTorch file",
        truncated: r"is not a readable PyTorch file \(RuntimeError: ",
        bare: r"is not a stage model \(models/<stage>\.pt, with its arch and state_dict\)",
        wrong_classes: r"its weights do not fit its arch and 3 classes \(size mismatch",
    }
    for path, message in cases.items():
        with pytest.raises(UserError, match=rf"^model file: {re.escape(str(path))}:? {message}") as info:
            load_model(path)
        assert "\n" not in str(info.value), path
    assert not marker.exists()
    assert load_model(good)[1]["arch"] == arch


@pytest.mark.integration
def test_predict_on_a_corrupt_model_file_is_one_line(tmp_path):
    proc = _run("--model", tmp_path, "x.jpg")
    expected = f"error: model file: {tmp_path} is a folder, not a PyTorch file"
    assert (proc.returncode, proc.stderr.strip()) == (2, expected)


@pytest.fixture
def untrained_model(tmp_path) -> Path:
    """The book's convnet with random weights, saved as a stage model: enough to test the plumbing."""
    from catdog_lab.models.factory import build_from_arch, save_model
    arch = {"kind": "convnet", "image_size": 48, "dropout": 0.0}
    torch.manual_seed(0)
    save_model(tmp_path / "model.pt", "scratch", arch, build_from_arch(arch))
    return tmp_path / "model.pt"


def test_two_photos_of_one_name_get_two_gradcam_overlays(untrained_model, tmp_path):
    from catdog_lab.predict import predict_files
    photos = [make_photo(tmp_path / folder / "0.jpg", label, i) for i, (folder, label) in
              enumerate((("cats", "cat"), ("dogs", "dog"), ("more", "cat")))]
    results, errors, _ = predict_files(untrained_model, photos, gradcam=True, out=tmp_path / "overlays")
    written = [Path(result["gradcam"]) for result in results]
    assert not errors and len(set(written)) == 3 and all(path.is_file() for path in written)
    assert sorted(p.name for p in (tmp_path / "overlays").iterdir()) == sorted(path.name for path in written)
    assert {path.name.split("_gradcam_")[0] for path in written} == {"0"}


def test_evaluate_lists_unreadable_photos_and_refuses_a_folder_of_none(untrained_model, tmp_path, capsys):
    from catdog_lab.predict import main
    held = tmp_path / "held"
    for label in ("cat", "dog"):
        make_photo(held / label / "good.jpg", label, 7)
    (held / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(SystemExit) as info:
        main(["--model", str(untrained_model), "--evaluate", str(held), "--out", str(tmp_path / "eval")])
    assert info.value.code == 1
    assert capsys.readouterr().err.strip().startswith(f"error: {held / 'dog' / 'broken.jpg'}: ")
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())["images"] == 2
    for good in held.rglob("good.jpg"):
        good.write_bytes(f"not a photo of a {good.parent.name}".encode())   # distinct: one content under two
                                                                            # classes is left out of both
    with pytest.raises(SystemExit) as info:
        main(["--model", str(untrained_model), "--evaluate", str(held), "--out", str(tmp_path / "eval2")])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: --evaluate {held}: none of its 3 image(s) of the model's "
                                              f"classes could be read; ")
    assert not (tmp_path / "eval2").exists()


class ConstantLogit(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(1, 2, 3)) * 0


def test_decoding_limit_is_the_configs_unless_given(tmp_path):
    photo = make_photo(tmp_path / "photo.jpg", "cat", 3, size=(80, 60))
    assert Predictor(ConstantLogit(), 48).max_pixels == compose().data.max_image_pixels
    [result] = Predictor(ConstantLogit(), 48, max_pixels=80 * 60 - 1).predict([photo])
    assert result["error"] == "too large: 80x60 > data.max_image_pixels=4799"
    [result] = Predictor(ConstantLogit(), 48, max_pixels=80 * 60).predict([photo])
    assert result["error"] is None and result["p_dog"] == 0.5


def test_gradcam_layer_is_the_configs_unless_given():
    net = torch.nn.Module()
    net.features = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.ReLU(), torch.nn.Conv2d(2, 2, 3),
                                       torch.nn.ReLU())
    assert _gradcam_layer(net, None) is net.features[3]          # the convnet: its last conv block
    net.layer_index = {"block5_conv2": 1, compose().visualize.gradcam_layer: 3}
    assert _gradcam_layer(net, None) is net.features[3]
    assert _gradcam_layer(net, "block5_conv2") is net.features[1]
    with pytest.raises(UserError, match="--gradcam-layer: 'block9' is not a layer of this model"):
        _gradcam_layer(net, "block9")


def test_evaluating_a_folder_of_one_class_gives_the_other_no_recall(untrained_model, tmp_path):
    # a cats-only held-out folder showed `dog 0 0.0%` and a macro-F1 pulled down by the absent class
    from catdog_lab.predict import evaluate_folder, render_evaluation
    for i in range(4):
        make_photo(tmp_path / "held" / "cat" / f"{i}.jpg", "cat", i)
    summary = evaluate_folder(untrained_model, tmp_path / "held", tmp_path / "eval")
    assert summary["images_per_class"] == {"cat": 4, "dog": 0} and summary["recall"]["dog"] is None
    hits = summary["confusion"][0][0]
    assert summary["recall"]["cat"] == pytest.approx(hits / 4)
    # the classes that occur: cat, and dog only if the model said dog (its F1 is then 0). Every photo is a cat,
    # so cat's precision is 1 when it is said at all: F1 = 2 * 1 * (hits / 4) / (1 + hits / 4) = 2 hits / (4 + hits)
    cat_f1 = 2 * hits / (4 + hits)
    assert summary["macro_f1"] == pytest.approx(cat_f1 / (1 if hits == 4 else 2), abs=1e-6)
    table = render_evaluation(summary, "table").splitlines()
    assert next(line for line in table if line.startswith("dog ")).split() == ["dog", "0", "-"]
    assert render_evaluation(summary, "csv").splitlines()[2].startswith("dog,0,,")


@pytest.mark.integration                  # starts catdog-predict as a process
def test_evaluating_a_missing_folder_is_one_line_without_the_usage_text(tmp_path):
    proc = _run("--model", tmp_path / "absent.pt", "--evaluate", tmp_path / "nope")
    assert (proc.returncode, proc.stderr) == (2, f"error: --evaluate: {tmp_path / 'nope'} is not a folder\n")
