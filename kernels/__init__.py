"""zoo.kernels: numba CPU kernels that compute on zoo-format encoded weights."""
