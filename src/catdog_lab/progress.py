"""Progress on long work, suited to where the output goes.

On a terminal (or in Jupyter) tqdm's bar redraws itself in place. Into a log file (`nohup dvc repro > log`,
CI, `run_all_stages.py`'s per-seed logs) a redrawn bar is one endless line of carriage returns that
`tail` shows as a jumble; there each bar becomes a plain line every `LOG_EVERY_S` seconds and one at the
end (`[<what>] <n>/<total> <unit> (<percent>%), <elapsed> elapsed, about <left> left`, ..., and last
`[split: check + decode (2 workers)] 4000/4000 img (100%) in 00:19, 205.19img/s`).
"""
from __future__ import annotations

import sys

from tqdm import tqdm as plain_tqdm
from tqdm.auto import tqdm

LOG_EVERY_S = 30.0        # a log gets a line at most this often per bar (and one when it ends)
LOG_FORMAT = "[{desc}] {n_fmt}/{total_fmt} {unit} ({percentage:.0f}%), {elapsed} elapsed, about {remaining} left"
LOG_DONE = "[{desc}] {n_fmt}/{total_fmt} {unit} (100%) in {elapsed}, {rate_fmt}"


def bar_shows(stream=None) -> bool:
    """A terminal, or a Jupyter kernel (whose output is no tty but draws tqdm's bars as widgets)."""
    isatty = getattr(stream if stream is not None else sys.stderr, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


class LogLines(plain_tqdm):
    """tqdm writing whole lines (for a log file): each refresh its own line, none redrawn."""

    def __init__(self, *args, **kwargs):
        self._lines, self._shown = 0, None      # lines written, and the count the last one showed
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None):
        if msg == "":             # tqdm clearing a bar it does not leave: nothing to clear in a log
            return False
        if not msg and self.n in (0, self._shown):   # the empty bar drawn on creation; close() repeating a line
            return True
        if self.bar_format == LOG_FORMAT and self.total and self.n >= self.total:
            self.bar_format = LOG_DONE
        # tqdm's close() ends the last line itself; each earlier line is ended by the next one
        self.fp.write(("\n" if self._lines else "") + (msg or self.__str__()))
        self.fp.flush()
        self._lines, self._shown = self._lines + 1, self.n
        return True

    def close(self):
        if not self.disable and not self._lines and self.n == 0:
            self.leave = False    # nothing was done and nothing printed: no empty line either
        super().close()


def progress(iterable=None, *, desc: str, unit: str, total: int | None = None, disable: bool = False,
             mininterval: float = 1.0, **kwargs) -> plain_tqdm:
    """A tqdm bar on a terminal, `LogLines` elsewhere (see the module's docstring)."""
    if bar_shows():
        return tqdm(iterable, desc=desc, unit=unit, total=total, disable=disable, mininterval=mininterval, **kwargs)
    return LogLines(iterable, desc=desc, unit=unit, total=total, disable=disable, mininterval=LOG_EVERY_S,
                    bar_format=LOG_FORMAT if (total is not None or hasattr(iterable, "__len__")) else None,
                    **kwargs)
