"""Prediction throughput, images/s, on a folder of photos: `catdog-predict`'s batched path (JPEG decode,
EXIF, resize and forward pass) against the bare PyTorch forward pass on pre-decoded tensors, plus
onnxruntime on the exported file and the old one-image-per-batch path. Not part of the test suite.

    python benchmarks/predict_bench.py --photos <folder of JPEGs> --images 1000 --vgg-images 200
    python benchmarks/predict_bench.py --images 300          # generated photos, when no folder is at hand

Models: `--scratch FILE` / `--vgg FILE` (models/<stage>.pt), or built here: the book's convnet with random
weights, and VGG16 with the conv-base weights of `--weights` (default: the Keras-converted file in
~/.cache/catdog-lab when present) and a random head. Random weights change no throughput figure.
Goal: the predict path >= 80% of the bare forward rate.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

DEFAULT_WEIGHTS = Path.home() / ".cache" / "catdog-lab" / "vgg16_keras_imagenet_features.pt"


def photos(args, tmp: Path) -> list[Path]:
    if args.photos:
        from catdog_lab.data.images import IMAGE_SUFFIXES
        found = sorted(p for p in Path(args.photos).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        return found[:args.images]
    from catdog_lab.data.toy import toy_photo
    out = []
    for i in range(args.images):          # about the Kaggle photos' size (~400 x 360)
        path = tmp / "photos" / f"{('cat', 'dog')[i % 2]}.{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        toy_photo(("cat", "dog")[i % 2], i, 400, 360).save(path, quality=90)
        out.append(path)
    return out


def model_files(args, tmp: Path) -> dict[str, Path]:
    from catdog_lab.models.factory import build_from_arch, save_model

    files = {}
    torch.manual_seed(0)
    if args.scratch:
        files["scratch"] = Path(args.scratch)
    else:
        arch = {"kind": "convnet", "image_size": 150, "dropout": 0.0}
        files["scratch"] = tmp / "scratch.pt"
        save_model(files["scratch"], "scratch", arch, build_from_arch(arch))
    if args.vgg:
        files["vgg16"] = Path(args.vgg)
    elif not args.skip_vgg:
        weights = args.weights or (str(DEFAULT_WEIGHTS) if DEFAULT_WEIGHTS.is_file() else "none")
        arch = {"kind": "transfer", "image_size": 150, "dropout": 0.0, "backbone": "vgg16", "weights": weights,
                "hidden": 256, "activation": "relu", "trainable": []}
        files["vgg16"] = tmp / "vgg16.pt"
        save_model(files["vgg16"], "vgg16", arch, build_from_arch(arch))
    return files


def add_photo_and_model_args(parser: argparse.ArgumentParser, images: int, vgg_images: int) -> None:
    """The options every benchmark here shares: which photos and which two models (see `photos`, `model_files`)."""
    parser.add_argument("--photos", help="a folder of photos (searched recursively); default: generated photos")
    parser.add_argument("--images", type=int, default=images, help="photos for the scratch model")
    parser.add_argument("--vgg-images", type=int, default=vgg_images, help="photos for the VGG16 model (slow on a CPU)")
    parser.add_argument("--scratch", help="a scratch model file (default: random weights)")
    parser.add_argument("--vgg", help="a VGG16 transfer model file (default: built from --weights)")
    parser.add_argument("--weights", help="VGG16 conv-base weights file for the built model")
    parser.add_argument("--skip-vgg", action="store_true", help="the scratch model only")


def run_models(args, bench) -> None:
    """`bench(name, model file, photos, args, tmp)` for the scratch model, then VGG16 on `--vgg-images` photos."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = photos(args, tmp)
        if not files:
            sys.exit(f"error: --photos: no images under {args.photos}")
        models = model_files(args, tmp)
        bench("scratch", models["scratch"], files, args, tmp)
        if "vgg16" in models:
            bench("vgg16", models["vgg16"], files[:args.vgg_images], args, tmp)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_model(name: str, path: Path, files: list[Path], args, tmp: Path) -> dict:
    from catdog_lab.export import export, onnx_session
    from catdog_lab.models.factory import load_model
    from catdog_lab.predict import Predictor

    predictor = Predictor.from_file(path, batch_size=args.batch_size, workers=args.workers)
    net, bs = predictor.net, args.batch_size
    t = time.perf_counter()
    decoded = [predictor.decode(f) for f in files]
    decode_s = time.perf_counter() - t
    images = torch.stack([d for d in decoded if isinstance(d, torch.Tensor)])
    n = len(images)
    session = onnx_session(export(path, "onnx", tmp / f"{name}.onnx")["path"], threads=torch.get_num_threads())
    array = images.numpy()

    def bare():
        with torch.inference_mode():
            for i in range(0, n, bs):
                net(images[i:i + bs].float().contiguous(memory_format=torch.channels_last))

    def batched():
        results = list(predictor.predict(files))
        assert sum(r["error"] is None for r in results) == n

    def onnx():
        for i in range(0, n, bs):
            session.run(None, {"image": array[i:i + bs]})

    old_net, _ = load_model(path)

    def single():                                    # the old path: a batch of one each, default memory layout
        for f in files[:args.single_images]:
            with torch.inference_mode():
                torch.sigmoid(old_net(predictor.decode(f).unsqueeze(0).float()))

    # warm-up, then the best of --repeat rounds, the three paths interleaved: other jobs on the machine
    # slow every figure, and interleaving spreads that over all of them
    bare_s = predict_s = onnx_s = float("inf")
    for fn in (lambda: net(images[:bs].float().contiguous(memory_format=torch.channels_last)),
               lambda: list(predictor.predict(files[:bs])), lambda: session.run(None, {"image": array[:bs]})):
        with torch.inference_mode():
            fn()
    for _ in range(args.repeat):
        bare_s = min(bare_s, timed(bare))
        predict_s = min(predict_s, timed(batched))
        onnx_s = min(onnx_s, timed(onnx))
    single_s = timed(single)
    single = files[:args.single_images]
    out = {"model": name, "images": n, "decode": rate(n, decode_s), "bare": rate(n, bare_s),
           "predict": rate(n, predict_s), "single": rate(len(single), single_s), "onnx": rate(n, onnx_s)}
    print(f"{name}: {n} photos, batch {bs}: catdog-predict path (decode included) {out['predict']:.1f} img/s, "
          f"bare torch forward on pre-decoded tensors (same batch, channels_last) {out['bare']:.1f} img/s -> "
          f"{100 * out['predict'] / out['bare']:.0f}% of bare (goal >= 80%); onnxruntime on the same tensors "
          f"{out['onnx']:.1f} img/s ({100 * out['onnx'] / out['bare']:.0f}% of bare torch); decode alone, one thread "
          f"{out['decode']:.1f} img/s; "
          f"old one-image batches {out['single']:.1f} img/s ({len(single)} photos)", flush=True)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_photo_and_model_args(parser, images=1000, vgg_images=200)
    parser.add_argument("--single-images", type=int, default=50, help="photos for the one-image-per-batch path")
    parser.add_argument("--batch-size", type=int, default=None, help="default: catdog-predict's")
    parser.add_argument("--repeat", type=int, default=2, help="rounds; the best of them counts")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (default: catdog-predict's)")
    args = parser.parse_args(argv)
    from catdog_lab.predict import BATCH_SIZE, Predictor
    args.batch_size = args.batch_size or BATCH_SIZE
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores, "
          f"decode threads {args.workers or Predictor(torch.nn.Identity(), 1).workers}", flush=True)
    run_models(args, bench_model)


if __name__ == "__main__":
    main()
