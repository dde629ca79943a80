"""The record of a run: one entry per epoch (or L-BFGS iteration) for each quantity measured.

    history.train_total[-1], history.val_reconstruction, history.seconds
    history.keys()      # "epoch", "seconds", "train_<part>", "val_<part>", diagnostics

The keys follow the loss parts the model has (losses.part_names): a model with another
sparsity term records other parts, and nothing here changes. A key first recorded at a later
epoch reads None for the epochs before it; so does one not measured at some epoch.
"""
from __future__ import annotations

import numbers
import re

import numpy as np

from ..checks import shown
from ..errors import ConfigError

KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")
"""What a history key looks like (a checkpoint's history is checked against it)."""


class History:
    """Per-epoch records: {key: list, one entry per epoch (None where not measured)}."""

    def __init__(self, records=None):
        """records: {key: list of numbers or None, one per epoch}, all of one length (what
        as_dict gives), checked as from_dict checks it; None for an empty history."""
        self._records = {}
        if records is not None:
            _check_records(records, "records")
            for key, values in records.items():
                self._records[key] = [_plain(v) for v in values]

    def append(self, **record):
        """Add one epoch's record (numbers, or None where not measured); keys not seen before
        start here (None before)."""
        n = len(self)
        for key, value in record.items():
            if not KEY.fullmatch(key):
                raise ConfigError(f"history key {key!r} is not a lower-case name")
            if value is not None and not _is_number(value):
                raise ConfigError(f"history value {key}={shown(value)} must be a number or None")
        for key in record:
            if key not in self._records:
                self._records[key] = [None] * n
        for key, values in self._records.items():
            values.append(_plain(record.get(key)))

    def __getattr__(self, key):
        records = self.__dict__.get("_records", {})
        if key in records:
            return records[key]
        raise AttributeError(f"the history has no {key!r}; it has {', '.join(records) or 'nothing yet'}")

    def keys(self):
        return tuple(self._records)

    def as_dict(self):
        return {key: list(values) for key, values in self._records.items()}

    @classmethod
    def from_dict(cls, d):
        """A History from as_dict()'s output, checked: lower-case keys, lists of numbers or
        None of one length. A ConfigError says what is wrong."""
        _check_records(d, "d")
        return cls(d)

    def __len__(self):
        return len(next(iter(self._records.values()))) if self._records else 0

    def last(self):
        """The last epoch's record as a dict (empty before the first epoch)."""
        return {k: v[-1] for k, v in self._records.items()} if len(self) else {}

    def __repr__(self):
        return f"History({len(self)} epochs: {', '.join(self._records)})"


def _check_records(d, name):
    """A history's records: lower-case keys, lists of numbers or None of one length."""
    if not isinstance(d, dict):
        raise ConfigError(f"{name}: a history is a dict of lists, got {type(d).__name__}")
    lengths = set()
    for key, values in d.items():
        if not isinstance(key, str) or not KEY.fullmatch(key):
            raise ConfigError(f"{name}: history key {shown(key)} is not a lower-case name")
        if not isinstance(values, list) or not all(v is None or _is_number(v) for v in values):
            raise ConfigError(f"{name}: history field {shown(key)} is not a list of numbers")
        lengths.add(len(values))
    if len(lengths) > 1:
        raise ConfigError(f"{name}: history fields have different lengths {sorted(lengths)}")


def _is_number(v):
    """A real number (Python's or NumPy's; a diverged run's history may hold inf or NaN),
    not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _plain(v):
    """A number as Python's own (int or float: JSON writes them), None as None."""
    return v if v is None else int(v) if isinstance(v, numbers.Integral) else float(v)
