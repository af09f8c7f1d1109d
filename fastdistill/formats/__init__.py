"""Storage formats, the ground floor of the package: what a quantized or sparse weight looks like in memory and in
files (integer code ranges, dtypes and bit packing in :mod:`.codes`; CSR components and their checks in :mod:`.csr`).
The public API, every backend and :mod:`fastdistill.compress.io` share them; they import only torch."""
