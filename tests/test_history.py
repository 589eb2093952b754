"""The per-epoch line a run prints where no progress bar is drawn (history.epoch_line), by hand."""
from __future__ import annotations

from catdog_lab.history import duration, epoch_line


def _row(epoch: int, seconds: float | None) -> dict:
    return {"epoch": epoch, "train/loss": 0.17524, "train/acc": 0.957, "val/loss": 0.32865, "val/acc": 0.959,
            "seconds": seconds}


def test_a_time_left_is_said_to_the_unit_that_matters():
    assert [duration(s) for s in (4, 59.4, 59.6, 61, 3569, 3600, 31860)] == [
        "4 s", "59 s", "1 min", "1 min", "59 min", "1 h 00 min", "8 h 51 min"]


def test_the_epoch_line_says_the_figures_and_the_median_epoch_times_the_epochs_left():
    # a first epoch of 900 s (the CPU shared), then 333, 331.3, 340 s: the median (333 + 340) / 2 = 336.5 s
    # x 96 epochs left = 32,304 s = 538 min
    rows = [_row(1, 900.0), _row(2, 333.0), _row(3, 331.3), _row(4, 340.0)]
    assert epoch_line("finetune", rows[-1], 100, rows) == (
        "[finetune] epoch 4/100: train loss 0.1752, acc 0.9570; val loss 0.3286, acc 0.9590; 340 s, "
        "about 8 h 58 min left")


def test_the_last_epoch_says_no_time_left_and_missing_figures_are_left_out():
    rows = [_row(1, 10.0), _row(2, 12.0)]
    assert epoch_line("scratch", rows[-1], 2, rows).endswith("; 12 s")
    bare = {"epoch": 1, "train/loss": None, "train/acc": None, "val/loss": 0.5, "val/acc": None, "seconds": None}
    assert epoch_line("features", bare, 3, [bare]) == "[features] epoch 1/3: train -; val loss 0.5000"


def test_lightnings_advert_is_filtered_and_its_news_is_not(caplog):
    import logging

    from pytorch_lightning.utilities.rank_zero import rank_zero_info

    import catdog_lab.stages.train  # noqa: F401  (installs the filter, as every training stage does)
    with caplog.at_level(logging.INFO):
        rank_zero_info("💡 Tip: For seamless cloud logging, try installing litlogger")
        rank_zero_info("GPU available: False, used: False")
    assert [record.getMessage() for record in caplog.records] == ["GPU available: False, used: False"]
