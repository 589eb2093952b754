"""Per-epoch history: written to the DVC plots CSV after every epoch (nothing lost on a crash) and
kept in the checkpoint so a resumed run continues the same file."""
from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl

from catdog_lab.io import read_csv, write_csv

COLUMNS = ["epoch", "train/loss", "train/acc", "val/loss", "val/acc", "seconds"]


class History(pl.Callback):
    def __init__(self, csv_path: str | Path):
        self.csv_path, self.rows, self._t0 = Path(csv_path), [], None

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

    def state_dict(self):
        return {"rows": self.rows}

    def load_state_dict(self, state_dict):
        self.rows = list(state_dict.get("rows", []))
