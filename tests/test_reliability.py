"""Faults and bad input: corrupt files, hostile archives, killed runs, half-written outputs, bad config."""
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from catdog_lab.config import compose
from catdog_lab.data.sources import extract_zip
from catdog_lab.data.split import make_split
from catdog_lab.errors import DataError
from catdog_lab.io import atomic_path, torch_load
from conftest import make_dataset, make_photo, tiny_overrides


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A tiny PNG file whose header claims width x height pixels (a decompression bomb's calling card)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


BAD_KINDS = ("zero-byte", "truncated", "non-image", "png-named-jpg", "cmyk", "grayscale", "rgba", "bomb-header",
             "too-large")


def _mixed_folder(root: Path) -> dict[str, str]:
    """Good photos plus 2 files of every bad kind. Returns {file name: kind}."""
    make_dataset(root, per_class=10)
    kinds, good = {}, (root / "cat.1.jpg").read_bytes()
    for n, label in enumerate(("cat", "dog")):
        i = 100 + 20 * n
        files = {f"{label}.{i}.jpg": "zero-byte", f"{label}.{i + 1}.jpg": "truncated",
                 f"{label}.{i + 2}.jpg": "non-image", f"{label}.{i + 3}.jpg": "png-named-jpg",
                 f"{label}.{i + 4}.jpg": "cmyk", f"{label}.{i + 5}.jpg": "grayscale", f"{label}.{i + 6}.jpg": "rgba",
                 f"{label}.{i + 7}.jpg": "bomb-header", f"{label}.{i + 8}.jpg": "too-large"}
        (root / f"{label}.{i}.jpg").write_bytes(b"")
        (root / f"{label}.{i + 1}.jpg").write_bytes(good[: len(good) // 3])
        (root / f"{label}.{i + 2}.jpg").write_text("<html>this is a web page, not a photo</html>")
        make_photo(root / f"{label}.{i + 3}.jpg", label, i + 3, fmt="PNG")
        make_photo(root / f"{label}.{i + 4}.jpg", label, i + 4, mode="CMYK")
        make_photo(root / f"{label}.{i + 5}.jpg", label, i + 5, mode="L")
        make_photo(root / f"{label}.{i + 6}.jpg", label, i + 6, mode="RGBA", fmt="PNG")
        _png_header_only(root / f"{label}.{i + 7}.jpg", 50_000, 50_000)
        make_photo(root / f"{label}.{i + 8}.jpg", label, i + 8, size=(1200, 1000))
        kinds |= files
    return kinds


EXPECTED = {"zero-byte": "skipped", "truncated": "skipped", "non-image": "skipped", "bomb-header": "skipped",
            "too-large": "skipped", "png-named-jpg": "converted", "cmyk": "converted", "grayscale": "converted",
            "rgba": "converted"}


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_every_kind_of_bad_file_is_skipped_or_converted_and_listed(tmp_path, as_zip):
    root = tmp_path / "raw"
    kinds = _mixed_folder(root)
    source = root
    if as_zip:
        source = tmp_path / "train.zip"
        with zipfile.ZipFile(source, "w") as zf:
            for p in root.iterdir():
                zf.write(p, f"train/{p.name}")
        source = extract_zip(source, tmp_path / "extracted")
    total = sum(1 for p in Path(source).rglob("*.jpg"))
    # ask for every file, so that each one is inspected
    result = make_split(source, {"train": 10, "validation": 3, "test": 1}, seed=0, image_size=48,
                        max_pixels=1_000_000, cache_dir=tmp_path / "cache")
    skipped = {Path(s["file"]).name: s["reason"] for s in result["skipped"]}
    converted = {Path(c["file"]).name: c["note"] for c in result["report"]["converted"]}
    outcome = Counter()
    for name, kind in kinds.items():
        got = "skipped" if name in skipped else "converted" if name in converted else "used as is"
        assert got == EXPECTED[kind], (name, kind, skipped.get(name), converted.get(name))
        outcome[(kind, got)] += 1
    assert len(result["manifest"]) + len(skipped) == total
    print("\nbad inputs per kind:", dict(sorted(outcome.items())))


def _zip_with(path: Path, name: str, data: bytes = b"x", symlink: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train/cat.1.jpg", b"fine")
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (0o120777 << 16)
        zf.writestr(info, data)
    return path


@pytest.mark.parametrize("member, symlink", [("../escape.txt", False), ("train/../../escape.txt", False),
                                             ("/tmp/absolute_escape.txt", False), ("C:/windows.txt", False),
                                             ("..\\escape.txt", False), ("train/link", True)])
def test_hostile_archives_are_refused_and_write_nothing(tmp_path, member, symlink):
    archive = _zip_with(tmp_path / "evil.zip", member, b"/etc/passwd" if symlink else b"pwned", symlink)
    target = tmp_path / "out" / "extracted"
    before = set(tmp_path.rglob("*"))
    with pytest.raises(DataError, match="refusing"):
        extract_zip(archive, target)
    assert set(tmp_path.rglob("*")) == before
    assert not Path("/tmp/absolute_escape.txt").exists()


def _photo_zip(path: Path, members: dict[str, tuple[str, int]]) -> Path:
    """A zip of generated photos: {member name: (class, index)}."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, (label, index) in members.items():
            photo = make_photo(path.parent / "src" / name, label, index, size=(48, 48))
            zf.write(photo, name)
    return path


def test_a_member_the_archive_damaged_is_skipped_and_listed_not_fatal(tmp_path):
    members = {f"photos/{label}s/{i}.jpg": (label, i) for label in ("cat", "dog") for i in range(6)}
    archive = _photo_zip(tmp_path / "photos.zip", members)
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:            # flip one byte inside the stored data of one member
        info = zf.getinfo("photos/dogs/1.jpg")
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    root = extract_zip(archive, tmp_path / "extracted")
    assert not (root / "photos/dogs/1.jpg").exists()
    result = make_split(root, {"train": 3, "validation": 1, "test": 1}, seed=0, image_size=32, max_pixels=10**6,
                        cache_dir=tmp_path / "cache", layout="folders")
    [row] = [r for r in result["skipped"] if r["file"] == "photos/dogs/1.jpg"]
    assert row["class"] == "dogs" and row["reason"].startswith("damaged in the archive: ")
    assert result["report"]["damaged_in_archive"] == [row]
    assert result["report"]["counts"]["train"] == {"cats": 3, "dogs": 3}


def test_another_archive_copied_over_the_same_path_is_extracted_again(tmp_path):
    archive = tmp_path / "mine.zip"
    _photo_zip(archive, {f"{label}s/{i}.jpg": (label, i) for label in ("cat", "dog") for i in range(2)})
    target = tmp_path / "mine_extracted"
    assert sorted(p.name for p in extract_zip(archive, target).iterdir() if p.name[0] != ".") == ["cats", "dogs"]
    assert extract_zip(archive, target) == target                       # the same archive: not redone
    bigger = _photo_zip(tmp_path / "v2.zip", {f"{folder}/{i}.jpg": ("cat" if folder == "birds" else folder[:3], i)
                                              for folder in ("cats", "dogs", "birds") for i in range(2)})
    os.replace(bigger, archive)
    again = extract_zip(archive, target)
    assert sorted(p.name for p in again.iterdir() if p.name[0] != ".") == ["birds", "cats", "dogs"]


def test_a_download_stopped_after_its_last_byte_finishes_on_the_next_run(tmp_path):
    import hashlib
    import http.server
    import threading

    from catdog_lab.data.sources import download
    payload = os.urandom(5000)

    class Ranged(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            start = int(self.headers.get("Range", "bytes=0-")[6:].rstrip("-") or 0)
            if start >= len(payload):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(payload) - start))
            self.end_headers()
            self.wfile.write(payload[start:])

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Ranged)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/photos.zip"
        (tmp_path / "photos.zip.part").write_bytes(payload)               # killed while verifying, say
        got = download(url, tmp_path, hashlib.sha256(payload).hexdigest())
        assert got.read_bytes() == payload and not (tmp_path / "photos.zip.part").exists()
        (tmp_path / "again").mkdir()
        (tmp_path / "again" / "photos.zip.part").write_bytes(payload[:1234])   # killed halfway: resumed
        assert download(url, tmp_path / "again", hashlib.sha256(payload).hexdigest()).read_bytes() == payload
    finally:
        server.shutdown()



def test_two_jobs_downloading_one_archive_at_once_get_one_whole_file(tmp_path):
    """The second job waits for the first's download instead of appending to the same `.part`."""
    import hashlib
    import http.server
    import threading
    from socketserver import ThreadingMixIn

    from catdog_lab.data.sources import download
    payload = os.urandom(200_000)

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            for start in range(0, len(payload), 20_000):      # 10 chunks, 0.3 s: both jobs inside at once
                self.wfile.write(payload[start:start + 20_000])
                self.wfile.flush()
                time.sleep(0.03)

        def log_message(self, *args):
            pass

    class Server(ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url, digest = f"http://127.0.0.1:{server.server_port}/photos.zip", hashlib.sha256(payload).hexdigest()
    barrier, got, failures = threading.Barrier(2), [], []

    def job():
        barrier.wait()
        try:
            got.append(download(url, tmp_path / "raw", digest).read_bytes())
        except Exception as exc:            # noqa: BLE001 - any failure is the finding
            failures.append(repr(exc))

    threads = [threading.Thread(target=job) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        server.shutdown()
    assert failures == [] and got == [payload, payload]


KILLABLE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from omegaconf import OmegaConf
    from catdog_lab.history import History
    from catdog_lab.stages.train import train
    original = History.on_train_epoch_end
    def slow(self, trainer, module):
        original(self, trainer, module)
        if trainer.current_epoch + 1 == 2:       # epoch 2's history row and checkpoint are written
            # the sentinel tells the test to kill now; it names the checkpoint, so that the test can tell
            # a checkpoint saved later than this hook from one that is missing
            partial = Path(sys.argv[2] + ".partial")     # renamed: the test never sees it half written
            partial.write_text(trainer.checkpoint_callback.last_model_path)
            partial.rename(sys.argv[2])
            time.sleep(120)                      # wait to be killed
    History.on_train_epoch_end = slow
    train(OmegaConf.load(sys.argv[1]), "scratch")
""")


@pytest.mark.integration
def test_sigkilled_training_resumes_and_finishes_its_mlflow_run(tiny_split, tmp_path):
    from mlflow.tracking import MlflowClient
    cfg = tiny_split
    cfg.scratch.epochs = 4
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(OmegaConf.to_yaml(cfg))
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE)
    history = tmp_path / "plots/scratch.csv"
    sentinel = tmp_path / "epoch-2-written"
    log = tmp_path / "killable.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(script), str(cfg_path), str(sentinel)], stdout=out, stderr=out)
    deadline = time.time() + 300
    while not sentinel.exists():               # the child writes it once epoch 2 is on disk, then waits
        assert proc.poll() is None, f"the training process ended before epoch 2: {log.read_text()[-2000:]}"
        assert time.time() < deadline, "no sentinel from the training process within 300 s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert sentinel.read_text() == str(tmp_path / "checkpoints/scratch/last.ckpt")
    assert (tmp_path / "checkpoints/scratch/last.ckpt").exists()
    assert len(history.read_text().strip().splitlines()) == 3                  # header + 2 epochs
    # no bar without a terminal: one line per epoch instead, on stderr and flushed, so none died in a buffer
    epoch_lines = [line for line in log.read_text().splitlines() if line.startswith("[scratch] epoch ")]
    assert [line.split(":")[0] for line in epoch_lines] == ["[scratch] epoch 1/4", "[scratch] epoch 2/4"]
    assert not (tmp_path / "metrics/scratch.json").exists()
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    [killed] = client.search_runs([exp.experiment_id], "tags.stage = 'scratch'")
    assert killed.info.status == "RUNNING"                 # SIGKILL: nobody could close it

    rerun = subprocess.run([sys.executable, "-c", "import sys; from omegaconf import OmegaConf; "
                            "from catdog_lab.stages.train import train; train(OmegaConf.load(sys.argv[1]), 'scratch')",
                            str(cfg_path)], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "[scratch] resuming from" in rerun.stdout
    assert "s of epochs in all, " in rerun.stdout and "s in this resumed run)" in rerun.stdout
    # the resumed run ends epoch 2 once more (Lightning restarts from the checkpoint taken at its validation
    # end; its CSV row is rewritten), then 3 and 4: one line each, as the CSV has them
    assert [line.split(":")[0] for line in rerun.stderr.splitlines() if line.startswith("[scratch] epoch ")] == [
        "[scratch] epoch 2/4", "[scratch] epoch 3/4", "[scratch] epoch 4/4"]
    metrics = yaml.safe_load((tmp_path / "metrics/scratch.json").read_text())
    assert metrics["epochs"] == 4
    epochs = [line.split(",")[0] for line in history.read_text().strip().splitlines()[1:]]
    assert epochs == ["1", "2", "3", "4"]
    [run] = client.search_runs([exp.experiment_id], "tags.stage = 'scratch'")
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    # Lightning resumes a checkpoint taken at validation end by validating that epoch once more:
    # possibly one repeated point, never a missing or an extra epoch
    assert sorted({m.step for m in client.get_metric_history(run.info.run_id, "val/acc")}) == [0, 1, 2, 3]


@pytest.mark.integration
def test_a_killed_writer_leaves_no_half_written_output(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"previous good content")
    code = textwrap.dedent(f"""
        import sys, time
        from catdog_lab.io import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half of a new file")
                f.flush()
                print("writing", flush=True)
                time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert target.read_bytes() == b"previous good content"
    # an exception inside the block: old content kept, temporary file removed
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("crash")
    assert target.read_bytes() == b"previous good content"
    partial = [p.name for p in tmp_path.iterdir()
               if p.name.startswith(".out.bin") and p.stat().st_size == len(b"partial")]
    assert partial == []


@pytest.mark.parametrize("stage, override, message", [
    ("scratch", "scratch.epochs=-2", "error: scratch.epochs: must be a positive integer, got -2"),
    ("augmented", "augmented.epochs=0", "error: augmented.epochs: must be a positive integer, got 0"),
    ("scratch", "scratch.lr=0", "error: scratch.lr: must be a number > 0, got 0"),
    ("finetune", "finetune.lr=-1e-5", "error: finetune.lr: must be a number > 0, got -1e-05"),
    ("features", "backbone.builder=resnet9000",
     "error: backbone.builder: unknown builder 'resnet9000'; choose vgg16_book, torchvision or <module>:<function>"),
    ("features", "backbone.weights=/missing/vgg.pt",
     "error: backbone.weights: file /missing/vgg.pt not found (use imagenet, none or an existing file)"),
    ("split", "data.split.train=500", None),
])
@pytest.mark.integration
def test_bad_config_values_fail_fast_with_one_line_naming_the_key(tmp_path, raw_images, stage, override, message,
                                                                  monkeypatch, capsys):
    cfg = compose(tiny_overrides(tmp_path, raw_images, [override]))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(OmegaConf.to_container(cfg, resolve=True)))
    if override == "scratch.epochs=-2":      # one case as DVC runs it: the stage's entry script, its own process
        root = Path(__file__).resolve().parents[1]
        proc = subprocess.run([sys.executable, str(root / "pipelines" / f"{stage}.py")], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        code, stderr = proc.returncode, proc.stderr
    else:                                    # the others through the same run_stage here (no 15 s of imports each)
        from catdog_lab.entry import run_stage
        monkeypatch.chdir(tmp_path)
        with pytest.raises(SystemExit) as exited:
            run_stage(stage)
        code, stderr = exited.value.code, capsys.readouterr().err
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 or lines[-1].startswith("error:")
    if message:
        assert lines[-1] == message
    else:
        assert lines[-1].startswith("error: class 'cat': only 12 images")    # before decoding any
        assert "data.split asks for 506" in lines[-1]
    assert not (tmp_path / "models").exists()                 # failed before any work


@pytest.mark.integration
def test_unknown_profile_is_one_line_from_the_cli(tmp_path):
    exe = Path(sys.executable).parent / "catdog"
    proc = subprocess.run([str(exe), "stage=scratch", "profile=turbo", f"hydra.run.dir={tmp_path}/run"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip().splitlines()[0]]
    assert proc.stderr.startswith("error: ") and "profile" in proc.stderr and "turbo" in proc.stderr


def test_our_own_tensor_files_refuse_pickled_code(tmp_path):
    import torch
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"images": Evil()}, tmp_path / "train.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        torch_load(tmp_path / "train.pt")
    assert not marker.exists()
    from catdog_lab.data.datamodule import load_cached_split
    with pytest.raises(DataError, match="unreadable cache"):
        load_cached_split(tmp_path, "train")
    assert not marker.exists()


def test_atomic_outputs_get_the_usual_permissions(tmp_path):
    from catdog_lab.io import write_text
    write_text(tmp_path / "out.txt", "hello")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_an_unreadable_last_checkpoint_starts_the_stage_over_and_says_so(tmp_path, capsys):
    import torch

    from catdog_lab.io import write_json
    from catdog_lab.stages.train import resume_point
    ckpt_dir = tmp_path / "checkpoints" / "scratch"
    ckpt_dir.mkdir(parents=True)
    torch.save({"epoch": 3, "state_dict": {"w": torch.ones(4)}}, ckpt_dir / "last.ckpt")
    write_json(ckpt_dir / "meta.json", {"key": "k", "mlflow_run_id": "run1"})
    assert resume_point(ckpt_dir, "k", False, True) == (ckpt_dir / "last.ckpt", "run1")
    whole = (ckpt_dir / "last.ckpt").read_bytes()
    (ckpt_dir / "last.ckpt").write_bytes(whole[:len(whole) // 2])          # a damaged disk, say
    assert resume_point(ckpt_dir, "k", False, True) == (None, None)
    assert f"[scratch] {ckpt_dir / 'last.ckpt'} is unreadable (" in capsys.readouterr().err
    assert not ckpt_dir.exists()                  # gone, so the next run neither trips on it nor reports it again


def test_training_refuses_cache_files_of_two_splits(tmp_path):
    # a split killed between writing its files: train.pt of the new split beside test.pt of the old one
    from catdog_lab.data.datamodule import split_classes
    root = tmp_path / "photos"
    make_dataset(root, per_class=8)
    for seed, cache in ((0, "cache"), (1, "other")):
        make_split(root, {"train": 4, "validation": 2, "test": 2}, seed=seed, image_size=32, max_pixels=10**6,
                   cache_dir=tmp_path / cache)
    assert split_classes(tmp_path / "cache") == ("cat", "dog")
    os.replace(tmp_path / "other" / "train.pt", tmp_path / "cache" / "train.pt")
    with pytest.raises(DataError, match=r"train\.pt, validation\.pt and test\.pt are of different splits .*"
                                        r"rerun the split stage$"):
        split_classes(tmp_path / "cache")


def test_a_cache_of_another_image_size_is_one_line_naming_the_key(tmp_path):
    # profile=book2 (180 px) on a 150-px split failed deep in torch: "mat1 and mat2 shapes cannot be multiplied"
    from catdog_lab.data.datamodule import split_classes
    make_dataset(tmp_path / "photos", per_class=8)
    make_split(tmp_path / "photos", {"train": 4, "validation": 2, "test": 2}, seed=0, image_size=48,
               max_pixels=10**6, cache_dir=tmp_path / "cache")
    assert split_classes(tmp_path / "cache", image_size=48) == ("cat", "dog")
    with pytest.raises(DataError, match=r"^data\.image_size: 180, but the split cached in .* holds 48-pixel images: "):
        split_classes(tmp_path / "cache", image_size=180)


def test_training_refuses_a_split_made_with_other_data_split_settings(tmp_path):
    # `catdog stage=scratch data.split.train=500` on a split of 1000 trained on the 1000 and recorded 500
    from catdog_lab.data.split import check_split_settings, write_split
    from catdog_lab.schema import Split, check
    make_dataset(tmp_path / "photos", per_class=10)
    result = make_split(tmp_path / "photos", {"train": 4, "validation": 2, "test": 2}, seed=7, image_size=32,
                        max_pixels=10**6, cache_dir=tmp_path / "cache")
    write_split(tmp_path / "split", result, tmp_path / "photos")

    def job(*overrides):
        return check(compose(["data.split.train=4", "data.split.validation=2", "data.split.test=2",
                              "data.split.seed=7", *overrides]), "data.split", Split)

    check_split_settings(tmp_path / "split", job())                        # the settings it was made with
    with pytest.raises(DataError, match=r"^data\.split\.train: 5, data\.split\.seed: 8, but the split in .*split "
                                        r"was made with train=4, seed=7: split again with these settings \(dvc "
                                        r"repro split; .*\), or set data\.split\.train=4 data\.split\.seed=7$"):
        check_split_settings(tmp_path / "split", job("data.split.train=5", "data.split.seed=8"))
    with pytest.raises(DataError, match=r"^data\.split\.fractions: \[0\.5, 0\.25, 0\.25\], but .* was made with "
                                        r"train=4, validation=2, test=2: .*, or set data\.split\.train=4 "
                                        r"data\.split\.validation=2 data\.split\.test=2 data\.split\.fractions=null$"):
        check_split_settings(tmp_path / "split", job("data.split.fractions=[0.5,0.25,0.25]"))
    with pytest.raises(DataError, match=r"^data\.split\.order: index, but .* was made with order=shuffle: "):
        check_split_settings(tmp_path / "split", job("data.split.order=index"))

    # fractions read back from report.json equal the config's, and a report from before settings were recorded
    result = make_split(tmp_path / "photos", {"train": 0.7, "validation": 0.1, "test": 0.2}, seed=7, image_size=32,
                        max_pixels=10**6, cache_dir=tmp_path / "cache")
    write_split(tmp_path / "split", result, tmp_path / "photos")
    check_split_settings(tmp_path / "split", job("data.split.fractions=[0.7,0.1,0.2]"))
    report = json.loads((tmp_path / "split" / "report.json").read_text())
    del report["asked"]
    (tmp_path / "split" / "report.json").write_text(json.dumps(report))
    check_split_settings(tmp_path / "split", job("data.split.seed=99"))     # nothing recorded: not checked


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has the GPU the test asks for")
def test_a_gpu_asked_for_on_a_machine_without_one_is_one_line():
    from catdog_lab.errors import ConfigError
    from catdog_lab.settings import validate_stage
    from catdog_lab.stages.train import make_trainer
    _, trainer_args = validate_stage(compose(["trainer.accelerator=gpu"]), "scratch")
    with pytest.raises(ConfigError, match=r"^trainer: .*\(trainer\.accelerator=gpu, devices=1, strategy=auto; "):
        make_trainer(trainer_args, 1, Path("unused"), Path("unused.csv"), False)


def test_last_ckpt_is_every_epoch_even_when_validation_loss_stops_falling(tmp_path):
    # Lightning 2.6's save_last=True wrote last.ckpt only when `best` improved: a kill resumed epochs behind
    import pytorch_lightning as pl
    import torch

    from catdog_lab.settings import validate_stage
    from catdog_lab.stages.train import make_trainer

    class Worsening(pl.LightningModule):       # validation loss 1, 2, 3: only epoch 1 is ever "best"
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, _):
            return (self.w * batch[0]).sum() ** 2

        def validation_step(self, batch, _):
            self.log("val/loss", float(self.current_epoch + 1))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(2, 1)), batch_size=2)
    _, trainer_args = validate_stage(compose(["trainer.progress_bar=false"]), "scratch")
    trainer, checkpoint, _ = make_trainer(trainer_args, 3, tmp_path / "ckpt", tmp_path / "history.csv", False)
    trainer.fit(Worsening(), data, data)
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
    assert (last["epoch"], best["epoch"]) == (2, 0)       # the third epoch's state, and the first's as best
    assert sorted(path.name for path in (tmp_path / "ckpt").glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]


def test_two_jobs_extracting_one_archive_at_once_both_get_every_photo(tmp_path):
    """data/raw is shared by the jobs of a sweep: the second waits for the first's extraction and reuses
    it (it used to delete the first's half-written folder, or the finished one under its reader)."""
    import threading
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for i in range(3000):
            zf.writestr(f"cats/{i}.jpg", b"x" * 64)
    target, barrier, seen, failures = tmp_path / "raw" / "many_extracted", threading.Barrier(3), [], []

    def job():
        barrier.wait()
        try:
            folder = extract_zip(archive, target)
            seen.append(sum(1 for _ in (folder / "cats").iterdir()))
        except Exception as exc:            # noqa: BLE001 - any failure is the finding
            failures.append(repr(exc))

    threads = [threading.Thread(target=job) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert failures == [] and seen == [3000, 3000, 3000]
    assert not list(target.parent.glob("*.partial"))
