"""Throughput and epoch-time figures for this machine, measured in one run (ratios are what count:
machines are noisy). Not part of the test suite.

    python benchmarks/bench.py                         # synthetic tensors, all sections
    python benchmarks/bench.py --cache data/cache --run-dir . --json bench.json
    python benchmarks/bench.py --skip-keras --images 256

Sections:
  1. VGG16 conv base, images/s: the `features` stage's code path vs a bare PyTorch loop
  1b. every shipped backbone (conf/backbone/*.yaml), conv base images/s on the stage path (random weights:
     speed does not depend on them)   python benchmarks/bench.py --backbones-only
  2. scratch convnet, seconds per training epoch: our Lightning path vs a bare PyTorch loop
  3. the same model and epoch in Keras 3 (PyTorch backend), the peer a book reader would use
  (--compile) the bare loop again with torch.compile: is it worth turning on?
  5. (--transfer / --only-transfer) features_augmented and finetune epochs: validation through the whole
     VGG16 every epoch vs on the frozen layers' outputs computed once
  4. end-to-end wall time per stage, read from <run-dir>/metrics/*.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "gpu": gpu}


def data(args, n: int, size: int = 150):
    if args.cache:
        from catdog_lab.data.datamodule import load_cached_split
        cached = load_cached_split(Path(args.cache), "train")
        images, labels = cached["images"][:n].clone(), cached["labels"][:n]     # in memory, as the bench wants
    else:
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, 2, (n,), generator=g)
    return images, labels


# ---------------------------------------------------------------- 1. conv base throughput
def bench_conv_base(args) -> dict:
    from catdog_lab.models.components.backbones import build_vgg16
    from catdog_lab.models.features import conv_base_outputs

    images, _ = data(args, args.feature_images)
    backbone = build_vgg16(args.weights or "none")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bs = args.feature_batch
    conv_base_outputs(backbone, images[:bs], bs, device)                 # warm-up
    t = time.perf_counter()
    ours = conv_base_outputs(backbone, images, bs, device, desc="bench: stage path")
    ours_s = time.perf_counter() - t

    model = torch.nn.Sequential(backbone.preprocess, backbone.features).eval().to(device).to(
        memory_format=torch.channels_last)
    with torch.inference_mode():
        model(images[:bs].to(device).float().contiguous(memory_format=torch.channels_last))   # warm-up
        t = time.perf_counter()
        outs = []
        for i in range(0, len(images), bs):
            x = images[i:i + bs].to(device).float().contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                outs.append(model(x).float().cpu())
        if device.type == "cuda":
            torch.cuda.synchronize()
        bare_s = time.perf_counter() - t
    assert torch.allclose(torch.cat(outs), ours, atol=1e-3, rtol=1e-3)
    n = len(images)
    return {"images": n, "batch": bs, "stage_img_per_s": n / ours_s, "bare_img_per_s": n / bare_s,
            "ratio_stage_vs_bare": (n / ours_s) / (n / bare_s)}


def bare_training_epochs(loader, epochs: int, compiled: bool = False) -> list[float]:
    """Seconds per epoch of the scratch convnet in a plain PyTorch loop (same optimiser as the stage)."""
    from catdog_lab.models.components.convnet import BookConvNet

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    net = BookConvNet(150).to(device).to(memory_format=torch.channels_last)
    step_net = torch.compile(net) if compiled else net
    opt = torch.optim.RMSprop(net.parameters(), lr=1e-4, alpha=0.9, eps=1e-7)
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        for xb, yb in loader:
            xb = xb.to(device).float().contiguous(memory_format=torch.channels_last)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(step_net(xb), yb.to(device).float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times


def bench_backbones(args) -> dict:
    """Conv-base images/s of each backbone in conf/backbone/, through the features stage's code path."""
    from catdog_lab.config import CONF_DIR, compose
    from catdog_lab.models.components.backbones import build_backbone
    from catdog_lab.models.features import conv_base_outputs
    from catdog_lab.settings import backbone_spec

    images, _ = data(args, args.feature_images)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bs, out = args.feature_batch, {}
    for name in sorted(p.stem for p in (CONF_DIR / "backbone").glob("*.yaml")):
        spec = backbone_spec(compose([f"backbone={name}", "backbone.weights=none"]))
        backbone = build_backbone(spec)
        conv_base_outputs(backbone, images[:bs], bs, device, desc=f"bench: {name} warm-up")
        t = time.perf_counter()
        features = conv_base_outputs(backbone, images, bs, device, desc=f"bench: {name}")
        seconds = time.perf_counter() - t
        out[name] = {"title": spec.title, "img_per_s": len(images) / seconds, "output": list(features.shape[1:]),
                     "params": sum(p.numel() for p in backbone.features.parameters())}
    return {"images": len(images), "batch": bs, "size": int(images.shape[-1]), "backbones": out}


# ---------------------------------------------------------------- 2. scratch epoch: Lightning vs bare
def bench_scratch_epoch(args) -> dict:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from catdog_lab.models.classifier import Classifier
    from catdog_lab.models.components.convnet import BookConvNet

    images, labels = data(args, args.images)
    epochs = args.epochs

    class EpochTimer(pl.Callback):
        def __init__(self):
            self.times, self.t = [], 0.0

        def on_train_epoch_start(self, trainer, module):
            self.t = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            self.times.append(time.perf_counter() - self.t)

    torch.manual_seed(0)
    module = Classifier(BookConvNet(150), lr=1e-4, channels_last=True)
    loader = DataLoader(TensorDataset(images, labels), batch_size=20, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    timer = EpochTimer()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         callbacks=[timer])
    trainer.fit(module, train_dataloaders=loader)
    ours = min(timer.times[1:] or timer.times)                       # first epoch includes warm-up

    times = bare_training_epochs(loader, epochs)
    bare = min(times[1:] or times)
    return {"images": len(images), "epochs_timed": epochs, "lightning_s_per_epoch": ours, "bare_s_per_epoch": bare,
            "ratio_lightning_vs_bare": ours / bare}


# ---------------------------------------------------------------- torch.compile: worth it here?
def bench_compile(args) -> dict:
    """Bare training loop, eager vs torch.compile (same model, data, optimiser). The compiled model's first
    epoch includes compilation, so it is reported apart from the steady-state epoch."""
    from torch.utils.data import DataLoader, TensorDataset

    images, labels = data(args, args.images)
    loader = DataLoader(TensorDataset(images, labels), batch_size=20, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))

    eager, compiled = bare_training_epochs(loader, args.epochs), bare_training_epochs(loader, args.epochs, True)
    return {"images": len(images), "eager_s_per_epoch": min(eager[1:] or eager),
            "compiled_s_per_epoch": min(compiled[1:] or compiled), "compiled_first_epoch_s": compiled[0]}


# ---------------------------------------------------------------- 3. Keras 3 peer
KERAS_SCRIPT = r"""
import os, sys, time, json
os.environ["KERAS_BACKEND"] = "torch"
import numpy as np, keras
from keras import layers
n, epochs = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (n, 150, 150, 3)).astype("float32") / 255.0
y = rng.integers(0, 2, (n, 1)).astype("float32")
model = keras.Sequential([keras.Input((150, 150, 3)),
    layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(2),
    layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2),
    layers.Conv2D(128, 3, activation="relu"), layers.MaxPooling2D(2),
    layers.Conv2D(128, 3, activation="relu"), layers.MaxPooling2D(2),
    layers.Flatten(), layers.Dense(512, activation="relu"), layers.Dense(1, activation="sigmoid")])
model.compile(optimizer=keras.optimizers.RMSprop(1e-4), loss="binary_crossentropy", metrics=["accuracy"])
class T(keras.callbacks.Callback):
    def on_epoch_begin(self, e, logs=None): self.t = time.perf_counter()
    def on_epoch_end(self, e, logs=None): times.append(time.perf_counter() - self.t)
times = []
model.fit(x, y, batch_size=20, epochs=epochs, verbose=0, callbacks=[T()])
print(json.dumps({"keras": keras.__version__, "params": model.count_params(), "times": times}))
"""


def bench_keras(args) -> dict:
    import importlib.util
    if importlib.util.find_spec("keras") is None:       # (importing it here would pick the TensorFlow backend)
        print("installing keras for the benchmark (not a project dependency) ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "keras"], check=True)
    proc = subprocess.run([sys.executable, "-c", KERAS_SCRIPT, str(args.images), str(args.epochs)],
                          capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "torch"})
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "keras run failed"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    times = out["times"]
    return {"keras_version": out["keras"], "params": out["params"], "keras_s_per_epoch": min(times[1:] or times)}


# ---------------------------------------------------------------- 5. VGG16 transfer epochs: validation cost
def bench_transfer_epochs(args) -> dict:
    """One epoch of `features_augmented` (frozen base) and `finetune` (block5 trainable) on VGG16 at
    `--transfer-size` px, augmented training batches of 20: validation through the whole net every epoch
    (before) vs on the frozen layers' outputs computed once (stages/train.py now). The one-time pass is timed
    apart. Each precision after the first (`--transfer-precisions`) times the cached path only, at that
    Lightning precision: what `trainer.precision=...` would cost a run on this machine."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from catdog_lab.data.augment import BatchAugment
    from catdog_lab.models.classifier import Classifier
    from catdog_lab.models.components.backbones import build_vgg16
    from catdog_lab.models.components.transfer import TransferNet
    from catdog_lab.models.features import module_outputs

    size = args.transfer_size
    images, labels = data(args, args.transfer_train + args.transfer_val, size)
    train = TensorDataset(images[:args.transfer_train], labels[:args.transfer_train])
    val_images, val_labels = images[args.transfer_train:], labels[args.transfer_train:]
    augment = BatchAugment(rotation_degrees=40, width_shift=0.2, height_shift=0.2, shear_radians=0.2, zoom=0.2,
                           zoom_independent=True, horizontal_flip=True, fill="nearest", interpolation="nearest")
    first, *others = args.transfer_precisions
    result = {"train_images": args.transfer_train, "val_images": args.transfer_val, "size": size,
              "precision": first, "other_precisions": {p: {} for p in others}}
    stages = (("features_augmented", []), ("finetune", ["block5_conv1", "block5_conv2", "block5_conv3"]))
    runs = [(stage, trainable, cached, first) for stage, trainable in stages for cached in (False, True)]
    runs += [(stage, trainable, True, p) for p in others for stage, trainable in stages]
    for stage, trainable, cached, precision in runs:
        torch.manual_seed(0)
        net = TransferNet(build_vgg16(args.weights or "none"), size, 256, 0.0, trainable)
        once = 0.0
        val_inputs = val_images
        if cached:
            t = time.perf_counter()
            val_inputs = module_outputs(net.frozen_part(), val_images, 32, torch.device("cpu"), desc="frozen")
            once = time.perf_counter() - t
        module = Classifier(net, 2e-5, augment, channels_last=True, eval_from_frozen=cached)
        trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             precision=precision)
        t = time.perf_counter()
        trainer.fit(module, DataLoader(train, batch_size=20, shuffle=True),
                    DataLoader(TensorDataset(val_inputs, val_labels), batch_size=64))
        seconds = time.perf_counter() - t
        if precision != first:
            result["other_precisions"][precision][f"{stage}_cached_epoch_s"] = seconds
            continue
        result[f"{stage}_{'cached' if cached else 'full'}_epoch_s"] = seconds
        if cached:
            result[f"{stage}_frozen_pass_s"] = once
    return result


# ---------------------------------------------------------------- 4. end-to-end per stage
def stage_times(run_dir: Path) -> dict:
    times = {}
    for stage in ("scratch", "augmented", "features", "features_augmented", "finetune", "visualize"):
        path = run_dir / "metrics" / f"{stage}.json"
        if path.exists():
            m = json.loads(path.read_text())
            times[stage] = {k: m.get(k) for k in ("profile", "epochs", "seconds_per_epoch", "wall_time_s", "test/acc")
                            if k in m}
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000, help="training images per epoch (sections 2-3)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per trainer; the fastest after the first counts")
    p.add_argument("--feature-images", type=int, default=320, help="images through the conv base (section 1)")
    p.add_argument("--feature-batch", type=int, default=32)
    p.add_argument("--cache", help="a data/cache folder to use real decoded images instead of synthetic ones")
    p.add_argument("--weights", help="backbone weights for section 1 (speed does not depend on them)")
    p.add_argument("--run-dir", type=Path, help="a project folder whose metrics/*.json hold a finished run")
    p.add_argument("--skip-keras", action="store_true")
    p.add_argument("--compile", action="store_true", help="also time the bare loop under torch.compile")
    p.add_argument("--transfer", action="store_true",
                   help="5. time features_augmented/finetune epochs, validation full vs on cached frozen outputs")
    p.add_argument("--transfer-train", type=int, default=2000, help="training images per transfer epoch (section 5)")
    p.add_argument("--transfer-val", type=int, default=1000, help="validation images per transfer epoch (section 5)")
    p.add_argument("--only-transfer", action="store_true", help="run section 5 alone")
    p.add_argument("--transfer-size", type=int, default=150,
                   help="image side in section 5 (150: the 1st edition; 180: the 2nd)")
    p.add_argument("--transfer-precisions", nargs="+", default=["32-true"], metavar="PRECISION",
                   help="Lightning precisions for section 5: the first is timed both ways, the others on the cached "
                        "path only (e.g. 32-true bf16-mixed; bf16 pays off on CPUs with avx512_bf16 or AMX)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--backbones-only", action="store_true", help="only section 1b (every shipped backbone)")
    args = p.parse_args()

    result = {"machine": machine()}
    print("machine:", json.dumps(result["machine"]))
    if args.transfer or args.only_transfer:
        result["transfer"] = t = bench_transfer_epochs(args)
        print(f"5. VGG16 transfer epoch at {t['size']} px, {t['train_images']} augmented training + "
              f"{t['val_images']} validation images, precision {t['precision']}:")
        for stage in ("features_augmented", "finetune"):
            full, cached = t[f"{stage}_full_epoch_s"], t[f"{stage}_cached_epoch_s"]
            print(f"   {stage:18s} validation through the whole net {full:.1f} s, on cached frozen outputs "
                  f"{cached:.1f} s ({full / cached:.2f}x faster; the one-time frozen pass "
                  f"{t[f'{stage}_frozen_pass_s']:.1f} s)")
        for precision, other in t["other_precisions"].items():
            for stage in ("features_augmented", "finetune"):
                base, this = t[f"{stage}_cached_epoch_s"], other[f"{stage}_cached_epoch_s"]
                print(f"   {stage:18s} at precision {precision}: {this:.1f} s on cached frozen outputs "
                      f"({base / this:.2f}x the speed of {t['precision']})")
        if args.only_transfer:
            if args.json:
                args.json.write_text(json.dumps(result, indent=2))
            return
    result["backbones"] = b = bench_backbones(args)
    print(f"1b. conv bases, {b['images']} images at {b['size']} px, batch {b['batch']}, features stage path:")
    for name, r in b["backbones"].items():
        print(f"   {name:16s} {r['title']:16s} {r['img_per_s']:7.1f} img/s  output {'x'.join(map(str, r['output']))}"
              f"  {r['params'] / 1e6:.1f} M conv-base parameters")
    if args.backbones_only:
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return
    result["conv_base"] = r = bench_conv_base(args)
    print(f"1. VGG16 conv base, {r['images']} images at 150 px, batch {r['batch']}: features stage path "
          f"{r['stage_img_per_s']:.1f} img/s, bare PyTorch loop {r['bare_img_per_s']:.1f} img/s -> "
          f"{100 * r['ratio_stage_vs_bare']:.0f}% of the bare loop (goal >= 90%)")
    result["scratch_epoch"] = r = bench_scratch_epoch(args)
    print(f"2. scratch convnet, one epoch of {r['images']} images, batch 20: Lightning path "
          f"{r['lightning_s_per_epoch']:.2f} s, bare PyTorch loop {r['bare_s_per_epoch']:.2f} s -> "
          f"{r['ratio_lightning_vs_bare']:.2f}x (goal <= 1.1x)")
    if not args.skip_keras:
        result["keras"] = k = bench_keras(args)
        if "error" in k:
            print(f"3. Keras 3: could not run ({k['error']})")
        else:
            ratio = r["lightning_s_per_epoch"] / k["keras_s_per_epoch"]
            k["ratio_ours_vs_keras"] = ratio
            print(f"3. Keras {k['keras_version']} (PyTorch backend), same model ({k['params']:,} params) and epoch: "
                  f"{k['keras_s_per_epoch']:.2f} s -> ours {ratio:.2f}x of its time (goal <= 0.5x)")
    if args.compile:
        result["compile"] = c = bench_compile(args)
        print(f"torch.compile, bare loop, one epoch of {c['images']} images: eager {c['eager_s_per_epoch']:.2f} s, "
              f"compiled {c['compiled_s_per_epoch']:.2f} s ({c['eager_s_per_epoch'] / c['compiled_s_per_epoch']:.2f}x "
              f"speed-up); the compiled first epoch took {c['compiled_first_epoch_s']:.2f} s including compilation")
    if args.run_dir:
        result["stages"] = times = stage_times(args.run_dir)
        print(f"4. end-to-end per stage from {args.run_dir}/metrics:")
        for stage, m in times.items():
            print(f"   {stage:20s} profile={m.get('profile')} epochs={m.get('epochs')} "
                  f"s/epoch={m.get('seconds_per_epoch')} wall={m.get('wall_time_s')} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
