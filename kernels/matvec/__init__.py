"""Matrix-vector kernels (decode, one token), one module per path family: portable (plain numba, float32),
generic (portable q4 / sparse rows in target-independent IR), x86 (int8 activations through AVX-512 / AVX2
IR rows) and tile4 (tile4-q4 on every path). dispatch.py picks one per (encoding, path, shape)."""
