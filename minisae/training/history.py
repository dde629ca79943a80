"""The record of a run: one entry per epoch (or L-BFGS iteration) for each quantity measured.

    history.train_total[-1], history.val_reconstruction, history.seconds
    history.keys()      # "epoch", "seconds", "train_<part>", "val_<part>", diagnostics

The keys follow the loss parts the model has (losses.part_names): a model with another
sparsity term records other parts, and nothing here changes. A key first recorded at a later
epoch reads None for the epochs before it; so does one not measured at some epoch.
"""
from __future__ import annotations

import re

from ..errors import ConfigError

KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")
"""What a history key looks like (a checkpoint's history is checked against it)."""


class History:
    """Per-epoch records: {key: list, one entry per epoch (None where not measured)}."""

    def __init__(self, records=None):
        self._records = {}
        for key, values in (records or {}).items():
            self._records[key] = list(values)

    def append(self, **record):
        """Add one epoch's record; keys not seen before start here (None before)."""
        n = len(self)
        for key in record:
            if key not in self._records:
                if not KEY.fullmatch(key):
                    raise ConfigError(f"history key {key!r} is not a lower-case name")
                self._records[key] = [None] * n
        for key, values in self._records.items():
            values.append(record.get(key))

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
        if not isinstance(d, dict):
            raise ConfigError(f"a history is a dict of lists, got {type(d).__name__}")
        lengths = set()
        for key, values in d.items():
            if not isinstance(key, str) or not KEY.fullmatch(key):
                raise ConfigError(f"history key {key!r} is not a lower-case name")
            if not isinstance(values, list) or not all(v is None or _is_number(v) for v in values):
                raise ConfigError(f"history field {key!r} is not a list of numbers")
            lengths.add(len(values))
        if len(lengths) > 1:
            raise ConfigError(f"history fields have different lengths {sorted(lengths)}")
        return cls(d)

    def __len__(self):
        return len(next(iter(self._records.values()))) if self._records else 0

    def last(self):
        """The last epoch's record as a dict (empty before the first epoch)."""
        return {k: v[-1] for k, v in self._records.items()} if len(self) else {}

    def __repr__(self):
        return f"History({len(self)} epochs: {', '.join(self._records)})"


def _is_number(v):
    """An int or float (a diverged run's history may hold inf or NaN), not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)
