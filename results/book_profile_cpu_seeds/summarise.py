"""Print the tables of docs/reproducing-the-book.md ("Measured") from this folder and the seed ledger.

Run from the project root: python results/book_profile_cpu_seeds/summarise.py
"""
import csv, json, glob, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))     # results/ledger_tables.py
from ledger_tables import print_tables
def rows(p): return list(csv.DictReader(open(p)))
def first(rs, key, thr):
    for r in rs:
        if float(r[key]) >= thr: return int(r["epoch"])
    return None
print("| run | init | train acc at epoch 5 / 10 / 15 / 20 | first epoch with train acc >= 90% | val acc at epoch 30 |")
print("|---|---|---|---|---|")
old = [("results/archive/book_protocol_cpu/scratch.csv", "before: CPU, seed 1337"), ("results/archive/book_profile_h100/plots/scratch.csv", "before: H100, seed 1337")]
for path, name in old:
    rs = rows(path); at = {int(r["epoch"]): r for r in rs}
    print(f"| {name} | torch | " + " / ".join(f"{float(at[e]['train/acc']):.3f}" for e in (5,10,15,20)) + f" | {first(rs,'train/acc',0.9)} | {float(at[30]['val/acc']):.3f} |")
for seed in (1337, 1338, 1339):
    p = f"results/book_profile_cpu_seeds/plots/scratch-seed{seed}.csv"
    rs = rows(p); at = {int(r["epoch"]): r for r in rs}
    v30 = f"{float(at[30]['val/acc']):.3f}" if 30 in at else "–"
    print(f"| now: CPU, seed {seed} | keras | " + " / ".join(f"{float(at[e]['train/acc']):.3f}" if e in at else "–" for e in (5,10,15,20)) + f" | {first(rs,'train/acc',0.9)} | {v30} |")
print()
print("| seed | test acc (last epoch, kept) | test acc (best val-loss epoch) | best epoch | val acc (kept) | s/epoch |")
print("|---|---|---|---|---|---|")
accs = []
for f in sorted(glob.glob("metrics/seeds/scratch/171938e34be4/seed-*.json")):
    m = json.load(open(f)); accs.append(m["test/acc"])
    print(f"| {m['seed']} | {100*m['test/acc']:.1f}% | {100*m['test/acc_best']:.1f}% | {m['best_epoch']} | {100*m['val/acc']:.1f}% | {m['seconds_per_epoch']} |")
print()
print("| run | recipe | train acc at epoch 10 / 30 / 50 / 91 / 100 | val acc at epoch 100 | test acc |")
print("|---|---|---|---|---|")
for path, name, metrics in (("results/archive/book_profile_h100/plots/augmented.csv", "before: H100, seed 1337", "results/archive/book_profile_h100/metrics/augmented.json"),
                            ("results/book_profile_cpu_seeds/plots/augmented-seed1337.csv", "now: CPU, seed 1337", "results/book_profile_cpu_seeds/metrics/augmented-seed1337.json")):
    rs = rows(path); at = {int(r["epoch"]): r for r in rs}
    m = json.load(open(metrics))
    print(f"| {name} | {'63 steps, torch init, no shear, bilinear' if 'h100' in path else '100 steps, keras init, Keras 2.0.8 augmentation'} | "
          + " / ".join(f"{float(at[e]['train/acc']):.3f}" for e in (10, 30, 50, 91, 100))
          + f" | {float(at[100]['val/acc']):.3f} | {100 * m['test/acc']:.1f}% |")
# the VGG stages: one table per ledger folder (fp32, bf16, the clipped loss), each seed and their mean
print_tables("book", "results/book_profile_cpu_seeds", ("features", "features_augmented", "finetune"))
