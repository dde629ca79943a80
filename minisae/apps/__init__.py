"""The applications, built on everything below: the `minisae` command, the benchmark, the
self-taught learning experiment and the figures.

    cli.py         the `minisae` command: train | show | gradcheck | bench | data | selftaught |
                   inspect
    bench.py       `minisae bench`: samples/s against PyTorch and the matmul roofline
    streambench.py `minisae bench --stream`: training from a file against from memory
    experiments.py the sparsity family's experiments (the book's claims, the frontier,
                   codes for classification, dead units), run by demos/
    selftaught.py  UFLDL's self-taught learning: autoencoder codes as a classifier's features
    plots.py       the figures: images of features and reconstructions where the data are
                   images; activations, curves, feature density, decoder norms and L0 always
    argtypes.py    the flags' argument types, shared by the subcommands
    inspect.py     `minisae inspect`: the rows that make each feature fire, its density and its
                   nearest features
"""
