"""The per-seed tables of docs/reproducing-the-book.md ("Measured"), one per seed-ledger folder: what the
results folders' `summarise.py` print for their profile.

Run from the project root (the ledger is `metrics/seeds/`; a results folder holds each run's
`plots/<name>.csv`, the name from `files`).
"""
import csv
import glob
import json
import statistics


def ledger(stage: str, profile: str) -> dict[str, list[dict]]:
    """The ledger entries of one stage run with `profile`, by recipe folder, each by seed."""
    found: dict[str, list[dict]] = {}
    for f in sorted(glob.glob(f"metrics/seeds/{stage}/*/seed-*.json")):
        entry = json.load(open(f))
        if entry.get("profile") == profile:
            found.setdefault(f.split("/")[-2], []).append(entry)
    return {folder: sorted(runs, key=lambda e: e["seed"]) for folder, runs in found.items()}


def files(stage: str, entry: dict) -> str:
    """A results folder's name for a run's files: `<stage>-seed<seed>`, with `-bf16` for a bf16 run and
    `-loss_clip` for one with Keras' clipped loss (`<stage>.loss_clip`) before `-seed`."""
    tags = ["bf16"] * (entry["recipe"]["precision"] == "bf16-mixed")
    tags += ["loss_clip"] * bool(entry["recipe"]["stage"].get("loss_clip"))
    return "-".join([stage, *tags, f"seed{entry['seed']}"])


def print_tables(profile: str, here: str, stages: tuple[str, ...]) -> None:
    """For each stage and ledger folder of `profile`: every seed's figures, then the mean over seeds."""
    for stage in stages:
        for folder, runs in ledger(stage, profile).items():
            print(f"\n{stage} (ledger folder {folder}, precision {runs[0]['recipe']['precision']}):\n")
            kept = "best val-loss epoch" if runs[0]["select"] == "best" else "last epoch"     # the stage's `select`
            print(f"| seed | test acc ({kept}, kept) | test acc (last epoch) | kept epoch | val acc (kept) "
                  "| val loss (kept) | train acc at the last epoch | s/epoch |")
            print("|---|---|---|---|---|---|---|---|")
            for m in runs:
                history = list(csv.DictReader(open(f"{here}/plots/{files(stage, m)}.csv")))
                print(f"| {m['seed']} | {100 * m['test/acc']:.1f}% | {100 * m['test/acc_last']:.1f}% | "
                      f"{m['selected_epoch']} of {m['epochs']} | {100 * m['val/acc']:.1f}% | {m['val/loss']:.3f} | "
                      f"{float(history[-1]['train/acc']):.3f} | {m['seconds_per_epoch']} |")
            accs = [m["test/acc"] for m in runs]
            last = [m["test/acc_last"] for m in runs]
            spread = f" ± {100 * statistics.stdev(accs):.1f}" if len(accs) > 1 else ""
            print(f"\nmean over {len(accs)} seed{'s' * (len(accs) > 1)}: kept {100 * statistics.mean(accs):.1f}%"
                  f"{spread}; last epoch {100 * statistics.mean(last):.1f}%")
