"""Training: the loop that drives the fast engine (or the reference), evaluation over a whole
data set, the run's history, progress, batch assembly, and full-batch L-BFGS through SciPy.

    fit.py        fit, evaluate; fit's settings Engine (fast or reference, threads) and
                  Checkpoints (saving, and resuming mid-epoch)
    batches.py    the epoch's order and its batches (in memory, on the device)
    stream.py     StreamBatches: an epoch's batches from files, shuffled through a bounded
                  buffer, resumable from any step; Stream: a source with the sizes it streams in
    units.py      dead units: how long each has been silent, and their resampling (DeadUnits)
    history.py    History: one record per epoch, keys following the model's loss parts
    progress.py   a bar on a terminal, whole lines in a log
    lbfgs.py      LBFGS: SciPy's L-BFGS-B over the model's flat parameter vector
"""
from ..optim import OPTIMIZERS as _MINIBATCH
from .fit import Checkpoints, Engine, evaluate, fit
from .history import History
from .lbfgs import LBFGS
from .stream import Stream
from .units import DeadUnits

OPTIMIZERS = {**_MINIBATCH, "lbfgs": LBFGS}
"""Every optimizer by the name the command line and checkpoints use."""

__all__ = ["Checkpoints", "DeadUnits", "Engine", "History", "LBFGS", "OPTIMIZERS", "Stream",
           "evaluate", "fit"]
