"""Print the `book2` tables of docs/reproducing-the-book.md ("Measured") from the seed ledger and this folder.

Run from the project root: python results/book2_profile_cpu_seeds/summarise.py
"""
import csv
import glob
import json
import statistics

HERE = "results/book2_profile_cpu_seeds"


def ledger(stage: str) -> dict[str, list[dict]]:
    """The ledger entries of one stage run with the book2 profile, by recipe folder, each by seed."""
    found: dict[str, list[dict]] = {}
    for f in sorted(glob.glob(f"metrics/seeds/{stage}/*/seed-*.json")):
        entry = json.load(open(f))
        if entry.get("profile") == "book2":
            found.setdefault(f.split("/")[-2], []).append(entry)
    return {folder: sorted(runs, key=lambda e: e["seed"]) for folder, runs in found.items()}


def files(stage: str, entry: dict) -> str:
    """This folder's name for a run's files: `<stage>-seed<seed>`, `<stage>-bf16-seed<seed>` for a bf16 run."""
    bf16 = entry["recipe"]["precision"] == "bf16-mixed"
    return f"{stage}{'-bf16' if bf16 else ''}-seed{entry['seed']}"


for stage in ("scratch", "augmented", "features", "features_augmented", "finetune"):
    for folder, runs in ledger(stage).items():
        print(f"\n{stage} (ledger folder {folder}, precision {runs[0]['recipe']['precision']}):\n")
        print("| seed | test acc (best val-loss epoch, kept) | test acc (last epoch) | kept epoch | val acc (kept) "
              "| val loss (kept) | train acc at the last epoch | s/epoch |")
        print("|---|---|---|---|---|---|---|---|")
        for m in runs:
            history = list(csv.DictReader(open(f"{HERE}/plots/{files(stage, m)}.csv")))
            print(f"| {m['seed']} | {100 * m['test/acc']:.1f}% | {100 * m['test/acc_last']:.1f}% | "
                  f"{m['selected_epoch']} of {m['epochs']} | {100 * m['val/acc']:.1f}% | {m['val/loss']:.3f} | "
                  f"{float(history[-1]['train/acc']):.3f} | {m['seconds_per_epoch']} |")
        accs = [m["test/acc"] for m in runs]
        last = [m["test/acc_last"] for m in runs]
        spread = f" ± {100 * statistics.stdev(accs):.1f}" if len(accs) > 1 else ""
        print(f"\nmean over {len(accs)} seed{'s' * (len(accs) > 1)}: kept {100 * statistics.mean(accs):.1f}%{spread}; "
              f"last epoch {100 * statistics.mean(last):.1f}%")
