"""The whole matrix on one GPU: both profiles (`book`, `book2`) x 3 seeds, every training stage, then each
profile's `compare` over its seed ledger, from a bundle made by scripts/pack_gpu_bundle.py.

    python scripts/gpu_matrix.py --bundle bundle/ --out run/             # on the GPU machine
    python scripts/gpu_matrix.py --dry-run --out /tmp/matrix             # the same path on tiny generated data (CPU)
    python scripts/gpu_matrix.py --estimate                              # its wall time, from the H100 run's logs

Each profile runs scripts/run_all_stages.py with --seeds and --jobs (its split and conv-base features once,
then every seed in its own process, all into <out>/<profile>/seeds), and the profiles run side by side, so
with 3 seeds six training processes share the GPU: the small convnets keep it mostly idle (one `scratch` run
used an H100 12.6% on average). The photos are decoded once per profile by its split stage and then held on
the GPU for the whole run (`compute.resident_data=true`); the augmentation warps each batch on the GPU with
one `affine_grid` + `grid_sample` (data/augment.py). Every stage records its precision (`bf16-mixed` on a
GPU by default) and the conv base's `weights_dtype` (`float16` from the bundle) in its metrics.

Rerun the same command after a kill: finished stages are skipped and training resumes from checkpoints.
<out>/matrix_summary.json and the printed table give, per profile, stage and seed, the test accuracy,
seconds per epoch, precision and weights dtype; <out>/<profile>/metrics/compare.json the means and verdicts.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))          # pack_gpu_bundle and run_all_stages sit next to this file

from pack_gpu_bundle import WEIGHTS_FILE, pack, packed_folder  # noqa: E402

from catdog_lab.config import compose  # noqa: E402
from catdog_lab.registry import TRAINING_STAGES  # noqa: E402

PROFILES = ("book", "book2")
SEEDS = (1337, 1338, 1339)
STAGES = ("split", *TRAINING_STAGES, "compare")      # visualize is not part of the matrix
H100_RUN = SCRIPTS.parent / "results" / "archive" / "book_profile_h100"


def profile_overrides(bundle: Path, profile: str, overrides: list[str]) -> list[str]:
    """The run_all_stages overrides of one profile: the bundle's photos for its image size (packed at that
    size, or larger for the split to resize), the fp16 weights, resident data."""
    size = int(compose([f"profile={profile}", *overrides]).data.image_size)
    photos = packed_folder(bundle, size)
    if photos is None:
        packed = sorted(p.name for p in bundle.glob("photos-*")) or ["none"]
        raise SystemExit(f"error: the bundle {bundle} has no photos of {size} px or more for profile {profile} "
                         f"(it has {', '.join(packed)}): pack them with scripts/pack_gpu_bundle.py --sizes {size}")
    weights = bundle / WEIGHTS_FILE
    if not weights.is_file():
        raise SystemExit(f"error: {weights} not found: make the bundle with scripts/pack_gpu_bundle.py")
    return [f"profile={profile}", f"data.source.path={photos}", f"backbone.weights={weights}",
            "compute.resident_data=true", *overrides]


def run_matrix(bundle: Path, out: Path, profiles: list[str], seeds: list[int], jobs: int, stages: list[str],
               tracking: bool, overrides: list[str]) -> int:
    started = time.perf_counter()
    per_profile = {profile: profile_overrides(bundle, profile, overrides) for profile in profiles}  # checked first
    procs = {}
    for profile in profiles:
        folder = out / profile
        folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, str(SCRIPTS / "run_all_stages.py"), "--out", str(folder),
                   *([] if tracking else ["--no-tracking"]), "--seeds", *map(str, seeds), "--jobs", str(jobs),
                   "--stages", *stages, "--", *per_profile[profile]]
        log = open(folder / "matrix.log", "a")
        procs[profile] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log
        print(f"{profile}: started ({len(seeds)} seeds, {jobs} at a time), log {folder / 'matrix.log'}", flush=True)
    codes = {}
    for profile, (proc, log) in procs.items():
        codes[profile] = proc.wait()
        log.close()
        print(f"{profile}: {'done' if codes[profile] == 0 else f'FAILED ({codes[profile]})'} after "
              f"{time.perf_counter() - started:.1f} s", flush=True)
    seconds = round(time.perf_counter() - started, 1)
    summary = {"seconds": seconds, "exit_codes": codes, "runs": collect(out, profiles, seeds)}
    (out / "matrix_summary.json").write_text(json.dumps(summary, indent=2))
    print_table(summary["runs"])
    print(f"matrix: {len(profiles)} profiles x {len(seeds)} seeds in {seconds} s; "
          f"summary {out / 'matrix_summary.json'}")
    return 0 if not any(codes.values()) else 1


def collect(out: Path, profiles: list[str], seeds: list[int]) -> list[dict]:
    rows = []
    for profile in profiles:
        for seed in seeds:
            for stage in TRAINING_STAGES:
                path = out / profile / f"seed-{seed}" / "metrics" / f"{stage}.json"
                if path.exists():
                    m = json.loads(path.read_text())
                    rows.append({"profile": profile, "seed": seed, "stage": stage, "test/acc": m.get("test/acc"),
                                 "epochs": m.get("epochs"), "seconds_per_epoch": m.get("seconds_per_epoch"),
                                 "wall_time_s": m.get("wall_time_s"), "precision": m.get("precision"),
                                 "weights_dtype": m.get("weights_dtype"), "device": m.get("device")})
    return rows


def print_table(rows: list[dict]) -> None:
    print("| profile | stage | seed | test acc | epochs | s/epoch | wall s | precision | weights |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['profile']} | {r['stage']} | {r['seed']} | {r['test/acc']} | {r['epochs']} | "
              f"{r['seconds_per_epoch']} | {r['wall_time_s']} | {r['precision']} | {r['weights_dtype'] or '-'} |")


# ----------------------------------------------------------------------------------------------- dry run
def dry_run(out: Path, profiles: list[str], seeds: list[int], jobs: int, per_class: int, size: int) -> int:
    """The matrix command end to end on the CPU: generated photos and a random VGG16 (float32) packed into a
    bundle as the real ones are, then both profiles x seeds with one tiny epoch per stage."""
    import torch
    import torchvision
    from run_all_stages import make_photos

    from catdog_lab.io import torch_save
    from catdog_lab.models.components.backbones import KERAS_VGG16_FORMAT
    from catdog_lab.models.components.preprocess import TORCHVISION_IMAGENET

    raw = make_photos(out / "raw", per_class, size + 16)         # not a packed size: the split resizes
    weights = out / "vgg16_random.pt"
    if not weights.exists():
        torch.manual_seed(0)
        features = torchvision.models.vgg16(weights=None).features.state_dict()
        torch_save({"format": KERAS_VGG16_FORMAT, "state_dict": {f"features.{k}": v for k, v in features.items()},
                    "preprocessing": dict(TORCHVISION_IMAGENET), "source": "random, for a dry run"}, weights)
    n_train, n_val = per_class // 2, per_class // 4
    data = [f"data.split.train={n_train}", f"data.split.validation={n_val}",
            f"data.split.test={per_class - n_train - n_val}", f"data.image_size={size}"]
    bundle = out / "bundle"
    # packed larger than used, as the real bundle's 180 px photos serve the 150 px profile
    info = pack(bundle, [size + 8], 85, weights, [f"data.source.path={raw}", *data], derived=[size])
    print(f"dry run: bundle {info['total_bytes']:,} bytes", flush=True)
    tiny = [*data, "backbone.feature_batch_size=8"]
    for stage in TRAINING_STAGES:
        tiny += [f"{stage}.epochs=1", f"{stage}.steps_per_epoch=2", f"{stage}.validation_steps=1"]
    return run_matrix(bundle, out / "run", profiles, seeds, jobs, list(STAGES), False, tiny)


# ----------------------------------------------------------------------------------------------- estimate
# The H100 run in results/archive/book_profile_h100 used the recipe of commit 11ce264: an epoch was one pass over
# the 2,000 training images at the stage's batch size, and validation one pass over the 1,000 at batch
# max(batch, 64) (that commit's data/datamodule.py).
OLD_TRAIN_IMAGES, OLD_VAL_IMAGES, OLD_EVAL_BATCH = 2000, 1000, 64


def _old_batches(batch: int) -> int:
    return -(-OLD_TRAIN_IMAGES // batch) + -(-OLD_VAL_IMAGES // max(batch, OLD_EVAL_BATCH))


def _new_batches(cfg, stage: str) -> int:
    section, split = cfg[stage], cfg.data.split
    train = section.steps_per_epoch or -(-int(split.train) * 2 // section.batch_size)
    val = section.validation_steps or -(-int(split.validation) * 2 // max(section.batch_size, OLD_EVAL_BATCH))
    return int(train + val)


def _macs_per_image(cfg, stage: str) -> int:
    """Multiply-accumulates of one forward pass of the stage's network (conv and linear layers)."""
    import torch

    from catdog_lab.models.factory import build_from_arch, build_head
    from catdog_lab.settings import model_arch
    arch = model_arch(cfg, stage)
    size = int(cfg.data.image_size)
    if arch["kind"] == "head":          # on cached features: the base's output, C x side x side
        from catdog_lab.models.components.backbones import BackboneSpec, build_backbone
        spec = BackboneSpec.from_record(arch["backbone_spec"], arch["backbone"], "none")
        channels, side, _ = build_backbone(spec).output_shape(size)
        net, x = (build_head(channels * side * side, arch["hidden"], 0.0, arch["activation"]),
                  torch.zeros(1, channels, side, side))
    else:
        arch["weights"] = "none"
        net, x = build_from_arch(arch, load_weights=False), torch.zeros(1, 3, size, size)
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * module.in_channels // module.groups * kh * kw
        elif isinstance(module, torch.nn.Linear):
            total += module.in_features * module.out_features
    layers = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in layers]
    with torch.no_grad():
        net.eval()(x)
    for h in handles:
        h.remove()
    return total


def estimate(profiles: list[str], seeds: list[int]) -> dict:
    """Wall time of the matrix derived from the H100 run's measured per-epoch seconds and GPU utilisation.

    Per stage: the old run's seconds per batch (mean epoch after the first, over its batches) times the new
    recipe's batches, scaled up by the work per batch (forward MACs x batch size) where that grew, never
    down (a launch-bound step does not get cheaper with less work); plus the stage's fixed cost in the old
    run (wall time minus its steady epochs: start-up, first epoch, tests). GPU-busy seconds scale with the
    work. Six processes at once: at best the longest chain (if the GPU time-slices without delay), at worst
    the longest chain plus every other process's GPU-busy time (if each waits for all the others)."""
    from catdog_lab.io import read_csv
    old_summary = json.loads((H100_RUN / "run_summary.json").read_text())["stages"]
    old_cfg = compose(["profile=book"])
    old_batch = {}
    with open(H100_RUN / "comparison.md") as handle:          # the old run's settings table: its batch sizes
        for row in csv.reader((line.strip().strip("|") for line in handle if line.count("|") > 8), delimiter="|"):
            cells = [c.strip() for c in row]
            if cells[0] in TRAINING_STAGES and cells[4].isdigit():
                old_batch[cells[0]] = int(cells[4])
    chains, busy, per_stage = {}, 0.0, []
    for profile in profiles:
        cfg = compose([f"profile={profile}"])
        chain = 0.0
        for stage in TRAINING_STAGES:
            rows = read_csv(H100_RUN / "plots" / f"{stage}.csv")
            steady = [float(r["seconds"]) for r in rows[1:]]
            per_batch = sum(steady) / len(steady) / _old_batches(old_batch[stage])
            work = (_macs_per_image(cfg, stage) * cfg[stage].batch_size) / (
                _macs_per_image(old_cfg, stage) * old_batch[stage])
            epoch = per_batch * max(1.0, work) * _new_batches(cfg, stage)
            # what is not steady epochs: start-up, the first epoch's warm-up, the tests
            fixed = old_summary[stage]["seconds"] - sum(steady) / len(steady) * len(rows)
            seconds = fixed + epoch * int(cfg[stage].epochs)
            util = old_summary[stage]["gpu_util_mean"] / 100
            gpu = util * per_batch * work * _new_batches(cfg, stage) * int(cfg[stage].epochs)
            chain += seconds
            busy += gpu * len(seeds)
            per_stage.append({"profile": profile, "stage": stage, "epochs": int(cfg[stage].epochs),
                              "batches_per_epoch": _new_batches(cfg, stage), "work_per_batch_x": round(work, 2),
                              "seconds": round(seconds, 1), "gpu_busy_seconds": round(gpu, 1)})
        chain += old_summary["split"]["seconds"]
        chains[profile] = round(chain, 1)
    longest = max(chains.values())
    return {"per_stage": per_stage, "chain_seconds": chains, "gpu_busy_seconds_all": round(busy, 1),
            "best_seconds": round(max(longest, busy), 1), "worst_seconds": round(longest + busy, 1)}


def print_estimate(est: dict, seeds: list[int]) -> None:
    print("ESTIMATE (derived from results/archive/book_profile_h100 on an H100, old recipe; nothing here was run)")
    print("| profile | stage | epochs | batches/epoch | work/batch vs H100 run | s (one process) | GPU-busy s |")
    print("|---|---|---|---|---|---|---|")
    for r in est["per_stage"]:
        print(f"| {r['profile']} | {r['stage']} | {r['epochs']} | {r['batches_per_epoch']} | "
              f"{r['work_per_batch_x']}x | {r['seconds']} | {r['gpu_busy_seconds']} |")
    chains = ", ".join(f"{p} {s} s" for p, s in est["chain_seconds"].items())
    print(f"one seed's stages in sequence: {chains}; GPU-busy, all {len(seeds)} seeds of every profile: "
          f"{est['gpu_busy_seconds_all']} s")
    print(f"matrix wall time: {est['best_seconds']} s at best, {est['worst_seconds']} s at worst "
          f"(goal 600 s; process start-up per seed not included)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, help="the folder scripts/pack_gpu_bundle.py wrote")
    p.add_argument("--out", type=Path, help="where every profile's run goes (<out>/<profile>/)")
    p.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=PROFILES)
    p.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    p.add_argument("--jobs", type=int, help="seeds trained at once per profile (default: all of them)")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES + ("visualize",))
    p.add_argument("--tracking", action="store_true", help="log to MLflow under <out>/<profile> (needs mlflow)")
    p.add_argument("--dry-run", action="store_true",
                   help="generated photos, a random VGG16, one tiny epoch per stage: the command's plumbing on a CPU")
    p.add_argument("--per-class", type=int, default=8, help="--dry-run: generated photos per class")
    p.add_argument("--size", type=int, default=80,
                   help="--dry-run: image size (book2's five-conv net needs 76 or more)")
    p.add_argument("--estimate", action="store_true", help="print the matrix's estimated wall time and exit")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. trainer.precision=32-true")
    args = p.parse_args(argv)
    jobs = args.jobs or len(args.seeds)
    if jobs < 1:
        p.error(f"--jobs must be at least 1, got {jobs}")
    if args.estimate:
        est = estimate(args.profiles, args.seeds)
        print_estimate(est, args.seeds)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "estimate.json").write_text(json.dumps(est, indent=2))
        return 0
    if not args.out:
        p.error("--out is required")
    out = args.out.resolve()
    if args.dry_run:
        return dry_run(out, args.profiles, args.seeds, jobs, args.per_class, args.size)
    if not args.bundle:
        p.error("--bundle is required (or --dry-run)")
    return run_matrix(args.bundle.resolve(), out, args.profiles, args.seeds, jobs, args.stages, args.tracking,
                      args.overrides)


if __name__ == "__main__":
    sys.exit(main())
