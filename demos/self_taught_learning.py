"""Self-taught learning: do features learned from unlabelled digits help classify other digits?

    python demos/self_taught_learning.py --out runs/selftaught

(the same as `minisae selftaught --out runs/selftaught`; every flag of `minisae selftaught
--help` works here too)

UFLDL's exercise (minisae.apps.selftaught): a sparse autoencoder with UFLDL's settings (196
sigmoid units, rho 0.1, beta 3, lambda 3e-3, half the squared error summed over pixels)
trains by L-BFGS for 400 iterations on the digits 5-9 with their labels thrown away; then
softmax regressions (lambda 1e-4, L-BFGS for 100 iterations) learn the digits 0-4 from half
of them and are tested on the other half, with three inputs: the trained autoencoder's
codes, the raw pixels, and the codes of an untrained (freshly initialised) autoencoder. The
train and test files are pooled. Three autoencoder seeds x five random halvings = 15 runs per
input; the table gives the mean accuracy, its spread, and the paired differences (the same
halving for all three inputs).

--dataset fashion-mnist (or both: --dataset mnist fashion-mnist) runs the same on
Fashion-MNIST, classes 5-9 unlabelled and 0-4 labelled. --optimizer adam trains the
autoencoder with Adam instead (--epochs, --lr, --batch-size).

What it shows (offline subset, the defaults): the codes classify the digits 0-4 better than
the pixels do, though the autoencoder never saw one: 96.7% against 95.1% for raw pixels and
94.7% for an untrained model's codes, codes ahead of pixels in all 15 runs (by 0.7 to 2.8
points). On Fashion-MNIST they do not help: with 2,500 / 2,500 samples (as the subset) codes
82.5%, raw pixels 83.3%, untrained codes 84.2%; with all 70,000 (one seed, three halvings)
codes 84.6%, raw pixels 88.3%, untrained codes 86.5%. (A guess, not tested here: features of
sandals, shirts, sneakers, bags and boots (5-9) fit T-shirts, trousers, pullovers, dresses
and coats (0-4) worse than pen strokes of 5-9 fit 0-4.)

Offline, MNIST is the 5,000-digit subset (2,500 digits 5-9 for the autoencoder, 2,500 digits
0-4 to classify, 1,250 / 1,250 per halving): the defaults took 11 minutes on 2 busy CPU cores
(each autoencoder 2 to 3.5 minutes, the 45 classifiers 2.7 minutes). A set of 70,000 (the
full MNIST online, or Fashion-MNIST) took 7 minutes per autoencoder at a quieter moment;
--seeds 0 --splits 3 keeps it to one. --max-unlabelled / --max-labelled subsample either
part. --quick is a seconds-long smoke run for the tests. Writes <out>/<dataset>.json with
every run's accuracies, the settings and the times.
"""

import sys

from minisae.apps.cli import main

# The experiment is `minisae selftaught`; this script runs it with the same flags.
sys.exit(main(["selftaught", *sys.argv[1:]]))
