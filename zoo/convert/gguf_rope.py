"""Llama 3.1 RoPE scaling as llama.cpp stores it: the `rope_freqs` tensor (each frequency's divisor) <-> zoo's
`rope_scaling: {type: llama3, factor, low_freq_factor, high_freq_factor, original_max_seq_len}`.

llama.cpp's converter writes no scaling parameters for Llama 3.1, only the divisors they produce: 1 for high
frequencies, `factor` for low ones, 1 / ((1 - s) / factor + s) between, with s linear in 1 / wavelength. Reading a file
back, those divisors determine the frequencies (what the runtime needs) but not the three parameters behind them
uniquely, so the importer fits them with low_freq_factor 1 (Meta's value; any other choice gives the same
frequencies) and keeps the result only when it reproduces every divisor. Divisors that are all equal are linear
scaling.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import ConvertError

_RTOL = 1e-4  # float32 divisors computed in another program's arithmetic


def rope_freq_factors(config: dict) -> np.ndarray | None:
    """llama.cpp's `rope_freqs` for a llama3-scaled config: float32 [head_dim/2]; None without llama3 scaling.

    The same rule as zoo.runtime.reference.rope_inv_freq and llama.cpp's converter.
    """
    scaling = config.get("rope_scaling") or {}
    if config["arch"] != "llama" or scaling.get("type") != "llama3":
        return None
    wavelen = _wavelengths(config["head_dim"], config["rope_theta"])
    factor, lo, hi = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_seq_len"]
    smooth = (old_len / wavelen - lo) / (hi - lo)
    out = np.where(wavelen > old_len / lo, factor, 1.0)
    middle = (wavelen <= old_len / lo) & (wavelen >= old_len / hi)
    return np.where(middle, 1.0 / ((1 - smooth) / factor + smooth), out).astype(np.float32)


def llama3_scaling(factors: np.ndarray, head_dim: int, theta: float) -> dict | None:
    """zoo's llama3 `rope_scaling` that reproduces a GGUF's `rope_freqs` divisors (None when all are 1);
    ConvertError naming what is unsupported when no Llama 3 scaling does."""
    f = np.asarray(factors, np.float64).reshape(-1)
    if f.shape != (head_dim // 2,) or not np.all(np.isfinite(f)) or f.min() <= 0:
        raise ConvertError(f"GGUF: rope_freqs must hold {head_dim // 2} positive divisors (one per RoPE frequency), "
                           f"got {f.size} values")
    if np.allclose(f, 1.0, rtol=_RTOL, atol=0):
        return None
    wavelen = _wavelengths(head_dim, theta)
    factor = float(f.max())
    if np.allclose(f, factor, rtol=_RTOL, atol=0):  # every frequency divided alike: linear scaling
        return {"type": "linear", "factor": factor}
    middle = ~np.isclose(f, 1.0, rtol=_RTOL, atol=0) & ~np.isclose(f, factor, rtol=_RTOL, atol=0)
    # between the bands 1/f = (1 - s)/factor + s with s = old_len / (hi - lo) / wavelen - lo / (hi - lo)
    s = (1 / f[middle] - 1 / factor) / (1 - 1 / factor)
    lo, hi = 1.0, 4.0  # Meta's values, kept when fewer than two blended frequencies cannot tell
    if middle.sum() >= 2:
        slope, intercept = np.polyfit(1 / wavelen[middle], s, 1)
        if intercept < 0:
            hi = round(lo - lo / intercept, 4)
        old_len = slope * (hi - lo)
    elif middle.sum() == 1:
        old_len = (s[0] * (hi - lo) + lo) * wavelen[middle][0]
    else:  # a sharp step: a length just below the low band's shortest wavelength, and a blend too narrow to hold one
        old_len = np.floor(lo * wavelen[f >= factor].min() * (1 - 1e-9))
        hi = min(hi, np.floor(1e4 * old_len / wavelen[f < factor].max()) / 1e4)
    scaling = {"type": "llama3", "factor": factor, "low_freq_factor": lo, "high_freq_factor": float(hi),
               "original_max_seq_len": int(round(old_len)) if np.isfinite(old_len) else 0}
    config = {"arch": "llama", "head_dim": head_dim, "rope_theta": theta, "rope_scaling": scaling}
    ok = scaling["original_max_seq_len"] > 0 and hi > lo
    if not ok or not np.allclose(rope_freq_factors(config), f, rtol=_RTOL, atol=0):
        raise ConvertError("GGUF: rope_freqs holds frequency divisors that are not Llama 3 RoPE scaling "
                           "(only llama3-style rope_freqs is supported)")
    return scaling


def _wavelengths(head_dim: int, theta: float) -> np.ndarray:
    """Wavelength of each RoPE frequency [head_dim/2], float64."""
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    return 2 * np.pi / inv
