"""The book's claim about the sparsity weight, measured: too high gives useless reconstructions,
too low learns no interesting features.

    python demos/sparsity_weight_sweep.py --out runs/weight_sweep

Trains the ufldl preset's model (196 sigmoid units, KL with rho 0.1, half summed squared
error, lambda 3e-3) at each beta from 0 to 30, and reports test reconstruction (MSE per
pixel), the mean activation against the target, L0 and dead units, and the stroke score of
the features (orientation, coherence and localization, each against the same features with
their pixels shuffled), and draws the features side by side. Runs
minisae.apps.experiments.weight_sweep on MNIST (offline: the 4,000/1,000 subset); --quick is
a seconds-long smoke run for the tests.
"""
import sys

from minisae.apps.experiments import main

if __name__ == "__main__":
    sys.exit(main("weight_sweep", __doc__))
