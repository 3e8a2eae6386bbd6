"""Matrix-matrix kernels (prefill, a block of tokens): float32 (plain numba: dense, q4, q8), vnni (AVX-512
int8 tiles: q4, sparse-q4/q8), csr (float32 over the nonzeros, generic IR), vnni_csr (AVX-512 int8 over the
nonzeros) and tile4. dispatch.matmul_kernel picks one per (encoding, path, density, tokens)."""
