"""Public wrappers of the small ops and attention: check dtype, shape, contiguity; raise KernelError.

Every op takes an optional preallocated `out` (returned); 1-D inputs are viewed as one row.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import KernelError

from . import attention as _attn
from . import ops as _ops


def _f32(name: str, a: object, ndims: tuple[int, ...] = (1, 2)) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.dtype != np.float32:
        raise KernelError(f"{name} must be a float32 array, got {getattr(a, 'dtype', type(a).__name__)}")
    if a.ndim not in ndims:
        raise KernelError(f"{name} must have {' or '.join(map(str, ndims))} dimensions, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise KernelError(f"{name} is not C-contiguous")
    return a


def _out(out: object, like: np.ndarray) -> np.ndarray:
    if out is None:
        return np.empty_like(like)
    out = _f32("out", out, (like.ndim,))
    if out.shape != like.shape:
        raise KernelError(f"out has shape {out.shape}, expected {like.shape}")
    if not out.flags.writeable:
        raise KernelError("out is not writeable")
    return out


def _rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(1, -1) if a.ndim == 1 else a


def _norm(fn, x, weight, eps, out):
    x = _f32("x", x)
    weight = _f32("weight", weight, (1,))
    if weight.shape[0] != x.shape[-1]:
        raise KernelError(f"weight has {weight.shape[0]} entries, x rows have {x.shape[-1]}")
    out = _out(out, x)
    fn(_rows(x), weight, float(eps), _rows(out))
    return out


def rmsnorm(x: np.ndarray, weight: np.ndarray, eps: float, out: np.ndarray | None = None) -> np.ndarray:
    """RMSNorm over the last axis of x [n] or [tokens, n]; weight float32 [n]. out may be x."""
    return _norm(_ops.rmsnorm_rows, x, weight, eps, out)


def layernorm(x: np.ndarray, weight: np.ndarray, eps: float, out: np.ndarray | None = None) -> np.ndarray:
    """LayerNorm without bias (MPT) over the last axis; weight float32 [n]. out may be x."""
    return _norm(_ops.layernorm_rows, x, weight, eps, out)


def softmax(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Softmax over the last axis of x [n] or [rows, n]. out may be x."""
    x = _f32("x", x)
    out = _out(out, x)
    _ops.softmax_rows(_rows(x), _rows(out))
    return out


def silu_mul(gate: np.ndarray, up: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """silu(gate) * up (SwiGLU); gate, up, out float32 of one shape [n] or [tokens, n]."""
    gate, up = _f32("gate", gate), _f32("up", up)
    if gate.shape != up.shape:
        raise KernelError(f"gate {gate.shape} and up {up.shape} differ in shape")
    out = _out(out, gate)
    _ops.silu_mul_flat(gate.reshape(-1), up.reshape(-1), out.reshape(-1))
    return out


def gelu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Exact (erf) GELU, as MPT's nn.GELU(approximate='none'). out may be x."""
    x = _f32("x", x)
    out = _out(out, x)
    _ops.gelu_flat(x.reshape(-1), out.reshape(-1))
    return out


rope_tables = _ops.rope_tables
alibi_slopes = _attn.alibi_slopes


def rope(x: np.ndarray, pos: int, cos: np.ndarray, sin: np.ndarray, layout: str = "half") -> np.ndarray:
    """Rotate x in place: [n_heads, head_dim] (one token at `pos`) or [tokens, n_heads, head_dim]
    (token t at pos + t). cos, sin float32 [max_positions, head_dim // 2] from rope_tables."""
    x = _f32("x", x, (2, 3))
    cos, sin = _f32("cos", cos, (2,)), _f32("sin", sin, (2,))
    x3 = x.reshape(1, *x.shape) if x.ndim == 2 else x
    if layout not in ("half", "interleaved"):
        raise KernelError(f"rope layout must be 'half' or 'interleaved', got {layout!r}")
    head_dim = x3.shape[2]
    if head_dim % 2 or cos.shape != sin.shape or cos.shape[1] != head_dim // 2:
        raise KernelError(f"rope tables {cos.shape} do not fit head_dim {head_dim}")
    if pos < 0 or pos + x3.shape[0] > cos.shape[0]:
        raise KernelError(f"rope positions {pos}..{pos + x3.shape[0] - 1} exceed the table ({cos.shape[0]})")
    if not x.flags.writeable:
        raise KernelError("rope rotates x in place; x is not writeable")
    _ops.rope_inplace(x3, int(pos), cos, sin, layout == "interleaved")
    return x


def attention(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, n_tokens: int,
              out: np.ndarray | None = None, scale: float | None = None,
              alibi_slopes: np.ndarray | None = None) -> np.ndarray:
    """Causal GQA attention. q [n_heads, head_dim] (decode) or [T, n_heads, head_dim] (prefill),
    k_cache, v_cache [n_kv_heads, max_seq, head_dim] holding n_tokens positions (the last T are the
    queries' own). scale defaults to 1/sqrt(head_dim); alibi_slopes float32 [n_heads] adds MPT's bias."""
    q = _f32("q", q, (2, 3))
    k_cache, v_cache = _f32("k_cache", k_cache, (3,)), _f32("v_cache", v_cache, (3,))
    q3 = q.reshape(1, *q.shape) if q.ndim == 2 else q
    T, n_heads, head_dim = q3.shape
    n_kv, max_seq, kd = k_cache.shape
    if v_cache.shape != k_cache.shape or kd != head_dim:
        raise KernelError(f"caches {k_cache.shape}, {v_cache.shape} do not fit q {q.shape}")
    if n_kv == 0 or n_heads % n_kv:
        raise KernelError(f"{n_heads} query heads are not a multiple of {n_kv} kv heads")
    if not T <= n_tokens <= max_seq:
        raise KernelError(f"n_tokens {n_tokens} must be in [{T}, {max_seq}] (queries {T}, cache {max_seq})")
    slopes = np.zeros(n_heads, np.float32) if alibi_slopes is None else _f32("alibi_slopes", alibi_slopes, (1,))
    if slopes.shape[0] != n_heads:
        raise KernelError(f"alibi_slopes has {slopes.shape[0]} entries for {n_heads} heads")
    out = _out(out, q)
    _attn.attention_kernel(q3, k_cache, v_cache, int(n_tokens), float(scale or head_dim ** -0.5), slopes,
                           alibi_slopes is not None, out.reshape(q3.shape))
    return out
