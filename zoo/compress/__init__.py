"""zoo.compress: prune (magnitude, Wanda, SparseGPT; unstructured, N:M, neurons) and quantize (RTN, GPTQ) a
model layer by layer, write it as a zoo artifact with a measured card.

Public API: `Recipe`, `compress(src, out_dir, recipe, ...) -> card`, `sweep(...)`, and for one matrix
`compress_linear(w, stats, LinearRecipe)` with `InputStats`.
"""

from .linear import InputStats, LinearRecipe, compress_linear
from .pipeline import compress
from .recipe import Recipe
from .sweep import pareto_front, sweep

__all__ = ["InputStats", "LinearRecipe", "Recipe", "compress", "compress_linear", "pareto_front", "sweep"]
