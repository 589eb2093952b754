"""N = 3 and N = 5 classes through every stage (fast_dev_run), and what serves them: softmax
probabilities that sum to 1 in predict, the MLflow pyfunc and ONNX; the 2-class path stays one logit."""
import json

import pytest
import torch
import torchvision
from omegaconf import open_dict

from catdog_lab.config import compose
from catdog_lab.models.factory import build_from_arch, load_model
from catdog_lab.models.outputs import n_outputs, probabilities
from catdog_lab.stages.compare import compare
from catdog_lab.stages.publish import publish
from catdog_lab.stages.split import split
from catdog_lab.stages.train import train
from catdog_lab.stages.visualize import visualize
from conftest import make_class_folders, tiny_overrides
from helpers_stage import assert_fast_dev_run_outputs

NAMES = ["ant", "bee", "cow", "dog", "eel"]


@pytest.mark.parametrize("n", [3, 5])
def test_n_classes_through_every_stage(tmp_path, n):
    classes = NAMES[:n]
    root = make_class_folders(tmp_path / "photos", classes, per_class=8, size=(56, 50))
    torch.manual_seed(0)
    weights = tmp_path / "vgg16.pt"          # one fixed conv base (see tests/test_vgg.py)
    torch.save({k: v for k, v in torchvision.models.vgg16().state_dict().items() if k.startswith("features.")},
               weights)
    cfg = compose(tiny_overrides(tmp_path, root, [
        "data=folder", f"data.source.path={root}", "data.split.train=4", "data.split.validation=2",
        "data.split.test=2", f"backbone.weights={weights}"]))
    report = split(cfg)
    assert report["classes"] == classes
    for stage in ("scratch", "augmented", "features", "features_augmented", "finetune"):
        metrics = train(cfg, stage, fast_dev_run=True)
        assert_fast_dev_run_outputs(cfg, stage, metrics)
        net, bundle = load_model(tmp_path / "models" / f"{stage}.pt")
        assert bundle["classes"] == classes and bundle["class_counts"]["test"] == {c: 2 for c in classes}
        assert net(torch.zeros(2, 3, 48, 48)).shape == (2, n)          # one logit per class
    published = publish(cfg)             # the model cards and the registered pyfunc models: publish's
    for stage in ("scratch", "augmented", "features", "features_augmented", "finetune"):
        card = (tmp_path / "models" / f"{stage}.md").read_text()
        assert f"{n} classes: " + ", ".join(f"`{c}`" for c in classes) in card
        assert "| " + classes[-1] + " | 4 | 2 | 2 |" in card
        assert f"Output: {n} logits, softmax" in card
    import mlflow
    info = mlflow.models.get_model_info(published["models"]["finetune"]["registered"]["model_uri"])
    assert info.signature.outputs.input_names() == ["label", "probability", *[f"p_{c}" for c in classes], "error"]
    vis = visualize(cfg)
    assert vis["figures"] >= 8
    summary = compare(cfg)
    table = (tmp_path / "reports/comparison.md").read_text()
    assert "book (" not in table and "macro-F1" in table                 # not the book's data: no book column
    page = (tmp_path / "reports/index.html").read_text()
    assert "Data: classes and split" in page and "confusion/finetune.png" in page and classes[-1] in page
    assert summary is None or isinstance(summary, dict)

    # predict, the MLflow pyfunc and ONNX: one probability per class, summing to 1
    from catdog_lab.export import export, exported_classes, run_exported
    from catdog_lab.predict import Predictor, evaluate_folder
    from catdog_lab.serving import CatDogPyfunc, output_columns
    photos = sorted((root / classes[0]).glob("*.jpg"))[:3]
    results = list(Predictor.from_file(tmp_path / "models/finetune.pt").predict(photos))
    for r in results:
        assert sum(r[f"p_{c}"] for c in classes) == pytest.approx(1.0, abs=1e-5)
        assert r["probability"] == max(r[f"p_{c}"] for c in classes) and r["label"] in classes
    import base64

    import pandas as pd
    served = CatDogPyfunc(tmp_path / "models/finetune.pt").predict(
        pd.DataFrame({"image": [base64.b64encode(p.read_bytes()).decode() for p in photos]}))
    assert list(served.columns) == output_columns(classes) == ["label", "probability", *[f"p_{c}" for c in classes],
                                                               "error"]
    assert served[[f"p_{c}" for c in classes]].sum(axis=1).tolist() == pytest.approx([1.0] * 3, abs=1e-5)
    info = export(tmp_path / "models/finetune.pt", "onnx", tmp_path / "finetune.onnx")
    assert info["max_logit_diff"] <= 1e-4 and exported_classes(info["path"]) == classes
    probs, logits = run_exported(info["path"], torch.randint(0, 256, (3, 3, 48, 48), dtype=torch.uint8))
    assert probs.shape == (3, n) and torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)

    evaluation = evaluate_folder(tmp_path / "models/finetune.pt", root, tmp_path / "eval")
    assert evaluation["images"] == 8 * n and evaluation["classes"] == classes
    assert sum(map(sum, evaluation["confusion"])) == 8 * n
    assert (tmp_path / "eval/worst_mistakes.png").read_bytes()[:4] == b"\x89PNG"


def test_clipped_loss_for_any_number_of_classes():
    """<stage>.loss_clip: Keras 2.0.8 clips p to [clip, 1 - clip], for its binary and its categorical
    cross-entropy alike: a confidently wrong image's loss stops at -log(clip), with no gradient."""
    from catdog_lab.models.outputs import loss
    clip = 1e-7
    wrong = torch.tensor([[40.0, 0.0, 0.0]], requires_grad=True)          # sure of class 0, truly class 2
    clipped = loss(wrong, torch.tensor([2]), clip)
    assert clipped.item() == pytest.approx(-torch.log(torch.tensor(clip)).item(), rel=1e-5)
    clipped.backward()
    assert not wrong.grad.abs().any()
    unclipped = loss(torch.tensor([[40.0, 0.0, 0.0]]), torch.tensor([2]))
    assert unclipped.item() == pytest.approx(40.0, abs=1e-4)
    fine = torch.tensor([[0.3, -0.2, 1.1], [2.0, 0.1, -1.0]])                # inside the clip: the same loss
    assert loss(fine, torch.tensor([2, 0]), clip).item() == pytest.approx(loss(fine, torch.tensor([2, 0])).item())
    z = torch.tensor([40.0, -3.0])                                           # two classes: one logit, as before
    assert loss(z, torch.tensor([0, 1]), clip).item() == pytest.approx(
        (-torch.log(torch.tensor(clip)).item() + torch.nn.functional.softplus(torch.tensor(3.0)).item()) / 2,
        rel=1e-4)


def test_two_classes_stay_one_logit_and_sigmoid():
    assert n_outputs(2) == 1 and n_outputs(3) == 3
    arch = {"kind": "convnet", "image_size": 48, "dropout": 0.0, "filters": [4, 4], "pool_last": True, "hidden": 0}
    two, three = build_from_arch(arch, outputs=n_outputs(2)), build_from_arch(arch, outputs=n_outputs(3))
    x = torch.rand(4, 3, 48, 48) * 255
    z = two(x)
    assert z.shape == (4,)                                            # the book's single logit
    assert torch.allclose(probabilities(z)[:, 1], torch.sigmoid(z)) and three(x).shape == (4, 3)
    assert torch.allclose(probabilities(three(x)).sum(1), torch.ones(4))


@pytest.mark.integration                  # starts catdog-predict as a process
def test_evaluate_from_the_command_line(tmp_path, tiny_split):
    import subprocess
    import sys
    cfg = tiny_split
    with open_dict(cfg):
        cfg.tracking.enabled = False
    train(cfg, "scratch", fast_dev_run=True)
    labelled = tmp_path / "labelled"
    for label in ("cat", "dog"):
        for path in sorted((tmp_path / "raw").glob(f"{label}.*.jpg"))[:3]:
            (labelled / label).mkdir(parents=True, exist_ok=True)
            (labelled / label / path.name).symlink_to(path)
    from conftest import make_photo
    make_photo(labelled / "bird" / "b.jpg", "cat", 4321)                # not a class of the model: listed
    proc = subprocess.run([sys.executable, "-m", "catdog_lab.predict", "--model", str(tmp_path / "models/scratch.pt"),
                           "--evaluate", str(labelled), "--out", str(tmp_path / "ev"), "--format", "json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["images"] == 6 and summary["left_out"]["not_model_classes"] == ["bird"]
    assert set(summary["recall"]) == {"cat", "dog"}
    assert summary["accuracy"] == pytest.approx(sum(summary["confusion"][i][i] for i in range(2)) / 6, abs=1e-6)
    table = subprocess.run([sys.executable, "-m", "catdog_lab.predict", "--model", str(tmp_path / "models/scratch.pt"),
                            "--evaluate", str(labelled), "--out", str(tmp_path / "ev")], capture_output=True, text=True,
                           timeout=300)
    assert table.returncode == 0 and "accuracy" in table.stdout.splitlines()[0]
