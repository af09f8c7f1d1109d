"""Kernel implementations, one sub-package per backend (``python``, ``native``, ``numba``, ``cuda``), each
with one module per op family. Importing a backend package registers its kernels with :mod:`fastdistill._dispatch`;
that happens lazily, on the first op dispatched to it."""
