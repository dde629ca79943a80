"""Files a user keeps: checkpoints (.npz, no pickle, checked before memory is spent) and the
atomic writes every user file goes through.

    checkpoint.py   save, load, Checkpoint
    state.py        what a checkpoint holds of an optimizer, checked the same way on save and load
    atomic.py       atomic_write: a file appears whole or not at all
    lock.py         a run's folder held by a lock file while a run writes it
"""
from .atomic import atomic_write
from .checkpoint import Checkpoint, load, save

__all__ = ["Checkpoint", "atomic_write", "load", "save"]
