"""Argument types of the `minisae` command's flags, shared by its subcommands (argparse turns
their ArgumentTypeError into the usage line and exit status 2)."""
from __future__ import annotations

import argparse


def whole_number(text, low):
    """text as a whole number of at least low, or an ArgumentTypeError saying what came."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}" if low == 1
                                         else f"must be {low} or more, got {value}")
    return value


def positive_int(text):
    """A whole number of at least 1."""
    return whole_number(text, 1)


def count(text):
    """A whole number of at least 0."""
    return whole_number(text, 0)


def positive_real(text):
    """A finite number above 0 (seconds, a rate)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value
