"""Progress while training: a tqdm bar on a terminal; one line per epoch in a log file.

When the output is not a terminal (a log file, a pipe, CI), a bar's carriage-return updates
would pile up into one unreadable line, so progress is printed as whole lines instead: one
per `line_every` updates of the bar's postfix (the training loop sets it once per epoch).
"""
from __future__ import annotations

import sys


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class _Lines(_NoBar):
    """Progress as plain lines on a stream that is not a terminal."""

    def __init__(self, total, desc, unit, stream):
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.n = 0

    def update(self, n=1):
        self.n += n

    def line(self, **fields):
        """Print one line now: the position and the given fields."""
        parts = " ".join(f"{k}={v}" for k, v in fields.items())
        print(f"{self.desc}: {self.n}/{self.total} {plural(self.unit, self.total)} {parts}"
              .rstrip(), file=self.stream, flush=True)


WORDS = {"batch": ("batch", "batches"), "it": ("iteration", "iterations")}
"""(one, many) for units whose plural is not the unit + "s", or whose word in a line is not
the bar's abbreviation (tqdm's "it/s")."""


def plural(unit, n):
    """The unit's word for a count of n: "batch" for 1, "batches", "epochs", "iterations"."""
    one, many = WORDS.get(unit, (unit, unit + "s"))
    return one if n == 1 else many


def progress_bar(total, enabled, desc="training", unit="batch", stream=None):
    """A tqdm bar (closed when its block ends, also on an error) on a terminal, a line
    printer elsewhere, or a silent stand-in when not enabled. The training loop calls
    `line(**fields)` where there is one, at the end of each epoch."""
    if not enabled:
        return _NoBar()
    stream = sys.stderr if stream is None else stream
    if not getattr(stream, "isatty", lambda: False)():
        return _Lines(total, desc, unit, stream)
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, file=stream)
