"""Data: loaders that give NumPy arrays (training moves them to the device one batch at a time).

    datasets.py   MNIST and Fashion-MNIST: IDX reader, verified downloads, cache, offline subset
    patches.py    natural-image patches: eight bundled photographs, 1/f whitening, edge score
    arrays.py     your own rows: .npy, .npz, folders of .npy shards, read in blocks (ArrayFiles)

    data = minisae.data.load("mnist", download=False)   # x_train (n, 784) float32 in [0, 1]
"""
from .arrays import FLOAT_DTYPES, ArrayFiles, RowRange
from .datasets import IDX_DATASETS, Dataset, describe, fetch, load, load_fashion_mnist, \
    load_mnist, read_idx, write_idx

DATASETS = IDX_DATASETS + ("patches", "files")
"""Every data set the command line trains on, by name ("files": your own, given with
`minisae train --data PATH`)."""

__all__ = ["ArrayFiles", "RowRange", "DATASETS", "FLOAT_DTYPES", "Dataset", "IDX_DATASETS", "describe",
           "fetch", "load", "load_fashion_mnist", "load_mnist", "read_idx", "write_idx"]
