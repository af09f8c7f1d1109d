"""Kernel implementations, one sub-package per backend (``reference``, ``native``, ``numba_cpu``, ``cuda``), each
with one module per op family. Importing a backend package registers its kernels with :mod:`fastdistill._dispatch`;
that happens lazily, on the first op dispatched to it."""
