"""Progress in a log file: whole lines, none redrawn (catdog_lab.progress)."""
import io

from catdog_lab import progress as progress_module
from catdog_lab.progress import LogLines, progress


def test_a_bar_into_a_log_is_whole_lines_and_a_last_line_with_the_rate(monkeypatch):
    monkeypatch.setattr(progress_module, "LOG_EVERY_S", 0.0)    # a line per update
    out = io.StringIO()
    bar = progress(total=4, desc="split: check + decode", unit="img", file=out)   # pytest's stderr: no tty
    assert isinstance(bar, LogLines)
    for _ in range(4):
        bar.update(1)
    bar.close()
    lines = out.getvalue().split("\n")
    assert "\r" not in out.getvalue() and lines[-1] == ""          # ends with a newline, no blank line
    assert lines[0].startswith("[split: check + decode] 1/4 img (25%), 00:00 elapsed, about ")
    assert lines[-2].startswith("[split: check + decode] 4/4 img (100%) in 00:00, ")
    assert len(lines) == 5


def test_a_log_gets_no_line_for_a_bar_that_did_nothing_and_one_for_a_short_one():
    out = io.StringIO()
    progress(total=3, desc="empty", unit="img", file=out).close()
    assert out.getvalue() == ""
    for _ in progress(range(3), desc="features train", unit="batch", file=out):   # under LOG_EVERY_S: the end only
        pass
    assert out.getvalue().startswith("[features train] 3/3 batch (100%) in 00:00, ") and out.getvalue().count("\n") == 1
