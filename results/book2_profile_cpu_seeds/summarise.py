"""Print the `book2` tables of docs/reproducing-the-book.md ("Measured") from the seed ledger and this folder.

Run from the project root: python results/book2_profile_cpu_seeds/summarise.py
"""
import csv
import glob
import json
import statistics

HERE = "results/book2_profile_cpu_seeds"


def ledger(stage: str) -> list[dict]:
    """The ledger entries of one stage run with the book2 profile (one recipe folder each), by seed."""
    entries = [json.load(open(f)) for f in glob.glob(f"metrics/seeds/{stage}/*/seed-*.json")]
    return sorted((e for e in entries if e.get("profile") == "book2"), key=lambda e: e["seed"])


for stage in ("scratch", "augmented", "features", "features_augmented", "finetune"):
    runs = ledger(stage)
    if not runs:
        continue
    print(f"\n{stage}:\n")
    print("| seed | test acc (best val-loss epoch, kept) | test acc (last epoch) | kept epoch | val acc (kept) "
          "| val loss (kept) | train acc at the last epoch | s/epoch |")
    print("|---|---|---|---|---|---|---|---|")
    for m in runs:
        history = list(csv.DictReader(open(f"{HERE}/plots/{stage}-seed{m['seed']}.csv")))
        print(f"| {m['seed']} | {100 * m['test/acc']:.1f}% | {100 * m['test/acc_last']:.1f}% | {m['selected_epoch']} "
              f"of {m['epochs']} | {100 * m['val/acc']:.1f}% | {m['val/loss']:.3f} | "
              f"{float(history[-1]['train/acc']):.3f} | {m['seconds_per_epoch']} |")
    accs = [m["test/acc"] for m in runs]
    last = [m["test/acc_last"] for m in runs]
    spread = f" ± {100 * statistics.stdev(accs):.1f}" if len(accs) > 1 else ""
    print(f"\nmean over {len(accs)} seed{'s' * (len(accs) > 1)}: kept {100 * statistics.mean(accs):.1f}%{spread}; "
          f"last epoch {100 * statistics.mean(last):.1f}%")
