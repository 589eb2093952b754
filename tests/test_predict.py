import subprocess
import sys
from pathlib import Path

from omegaconf import open_dict

from catdog_lab.stages.train import train
from conftest import make_photo


def test_predict_prints_label_and_probability_saves_gradcam_and_reports_bad_files(tiny_split, tmp_path):
    cfg = tiny_split
    with open_dict(cfg):
        cfg.tracking.enabled = False
    train(cfg, "scratch")
    good = make_photo(tmp_path / "new" / "photo.jpg", "cat", 999, size=(80, 60))
    bad = tmp_path / "new" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    exe = Path(sys.executable).parent / "catdog-predict"
    proc = subprocess.run([str(exe), "--model", str(tmp_path / "models/scratch.pt"), "--gradcam",
                           "--out", str(tmp_path / "overlays"), str(good), str(bad), str(tmp_path / "nope.jpg")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    line = proc.stdout.strip().splitlines()[0]
    assert line.startswith(f"{good}: ") and ("cat (" in line or "dog (" in line) and line.rstrip().endswith(".png)")
    assert len(list((tmp_path / "overlays").glob("photo_gradcam_*.png"))) == 1
    errors = proc.stderr.strip().splitlines()
    assert any(e.startswith(f"error: {bad}: unreadable") or e.startswith(f"error: {bad}: not an image") for e in errors)
    assert f"error: {tmp_path / 'nope.jpg'}: no such file" in errors


def test_predict_missing_model_is_one_line(tmp_path):
    exe = Path(sys.executable).parent / "catdog-predict"
    proc = subprocess.run([str(exe), "--model", str(tmp_path / "none.pt"), "x.jpg"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'none.pt'} not found: train that stage first (dvc repro)"
