"""zoo: a package manager, file format and CPU runtime for sparse, quantized LLMs."""

from zoo.blas import pin as _pin_blas

_pin_blas()  # before any zoo module loads numpy: one OpenBLAS kernel table, reproducible builds (zoo/blas.py)

__version__ = "0.1.0"
