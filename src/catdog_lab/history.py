"""Per-epoch history: written to the DVC plots CSV after every epoch (nothing lost on a crash) and
kept in the checkpoint so a resumed run continues the same file. Where no progress bar is drawn (no
terminal: a log file, `nohup`, `run_all_stages.py`; or `trainer.progress_bar=false`), each epoch also prints
one line, so that a run of hours says how far it is and how long it has left."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import pytorch_lightning as pl

from catdog_lab.io import read_csv, write_csv

COLUMNS = ["epoch", "train/loss", "train/acc", "val/loss", "val/acc", "seconds"]


def duration(seconds: float) -> str:
    """4 s, 12 min, 8 h 49 min: a time left, to the unit that matters."""
    if round(seconds) < 60:
        return f"{round(seconds)} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def epoch_line(stage: str, row: dict, epochs: int, rows: list[dict]) -> str:
    """`[finetune] epoch 4/100: train loss 0.1752, acc 0.9570; val loss 0.3286, acc 0.9590; 340 s, about 8 h 58
    min left` (tests/test_history.py). The time left is the median epoch so far (a paused or shared first
    epoch does not skew it)."""
    def pair(split: str) -> str:
        loss, acc = row.get(f"{split}/loss"), row.get(f"{split}/acc")
        return f"{split} " + (", ".join(f"{name} {value:.4f}" for name, value in (("loss", loss), ("acc", acc))
                                        if value is not None) or "-")
    line = f"[{stage}] epoch {row['epoch']}/{epochs}: {pair('train')}; {pair('val')}"
    seconds = [kept["seconds"] for kept in rows if kept.get("seconds")] or [row.get("seconds")]
    if row.get("seconds"):
        line += f"; {row['seconds']:.0f} s"
        if row["epoch"] < epochs:
            line += f", about {duration(statistics.median(seconds) * (epochs - row['epoch']))} left"
    return line


class History(pl.Callback):
    def __init__(self, csv_path: str | Path, announce: bool = False):
        """announce: print `epoch_line` after every epoch (to stderr, flushed: nothing held in a buffer)."""
        self.csv_path, self.rows, self._t0, self.announce = Path(csv_path), [], None, announce

    def on_train_start(self, trainer, pl_module):
        # Resuming: Lightning saved the checkpoint at validation end, before this epoch's row was added
        # to the checkpointed state, so take the rows of the completed epochs from the CSV written since.
        done = trainer.current_epoch
        on_disk = read_csv(self.csv_path) if done and self.csv_path.exists() else []
        rows = {int(row["epoch"]): row for row in self.rows if int(row["epoch"]) <= done}
        for row in on_disk:
            if int(row["epoch"]) <= done:
                rows.setdefault(int(row["epoch"]), {key: (float(value) if value not in ("", None) else None)
                                                    for key, value in row.items()} | {"epoch": int(row["epoch"])})
        self.rows = [rows[epoch] for epoch in sorted(rows)]

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch + 1,
               "seconds": round(time.perf_counter() - self._t0, 3) if self._t0 else None}
        for key in COLUMNS[1:-1]:
            row[key] = round(float(metrics[key]), 6) if key in metrics else None
        self.rows = [kept for kept in self.rows if kept["epoch"] < row["epoch"]] + [row]
        if trainer.is_global_zero:          # several devices: every rank keeps the rows, one writes the file
            write_csv(self.csv_path, self.rows, COLUMNS)
            if self.announce:
                stage = self.csv_path.stem             # the CSV is plots/<stage>.csv
                print(epoch_line(stage, row, trainer.max_epochs, self.rows), file=sys.stderr, flush=True)

    def state_dict(self):
        return {"rows": self.rows}

    def load_state_dict(self, state_dict):
        self.rows = list(state_dict.get("rows", []))
