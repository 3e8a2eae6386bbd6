"""Architecture configs the format knows (llama, mpt): required keys and the tensors they imply."""

from __future__ import annotations

import math
from typing import Any

from zoo.errors import FormatError

_COMMON = {"arch": str, "dim": int, "n_layers": int, "n_heads": int, "vocab_size": int,
           "max_seq_len": int, "norm_eps": float, "tied_embeddings": bool}
REQUIRED: dict[str, dict[str, type]] = {
    "llama": {**_COMMON, "n_kv_heads": int, "head_dim": int, "rope_theta": float, "rope_layout": str},
    "mpt": {**_COMMON, "alibi_bias_max": float},
}
ROPE_LAYOUTS = ("half", "interleaved")
_LIMITS = {"n_layers": 4096, "n_heads": 4096, "n_kv_heads": 4096}  # other ints: at most 2**32
# float fields: finite, and (low, high) exclusive; norm_eps below 1 (it is added to a mean square)
_FLOAT_RANGES = {"norm_eps": (0.0, 1.0), "rope_theta": (0.0, math.inf), "alibi_bias_max": (0.0, math.inf)}
ROPE_SCALING_KEYS = {"linear": ("factor",),
                     "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_seq_len")}
TOKENIZER_KEYS = {"bos_token_id": (int, type(None)), "eos_token_ids": (list, type(None)), "add_bos": (bool, type(None)),
                  "chat_template": (str, type(None))}


def _is(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def hidden_dims(config: dict) -> list[int]:
    """Per-layer MLP width: `hidden_dim` is an int, or a list after neuron pruning."""
    hidden = config.get("hidden_dim")
    n = config.get("n_layers")
    if not _is(n, int) or not 0 < n <= _LIMITS["n_layers"]:
        raise FormatError(f"config: n_layers out of range, got {n!r}")
    if _is(hidden, int) and 0 < hidden <= 1 << 32:
        return [hidden] * n
    if isinstance(hidden, list) and len(hidden) == n and all(_is(h, int) and 0 < h <= 1 << 32 for h in hidden):
        return list(hidden)
    raise FormatError(f"config: hidden_dim must be a positive int or a list of {n} positive ints")


def check_config(config: Any) -> None:
    """Raise FormatError unless `config` is a valid config of a known architecture."""
    if not isinstance(config, dict):
        raise FormatError("config: not a JSON object")
    arch = config.get("arch")
    if not isinstance(arch, str) or arch not in REQUIRED:
        raise FormatError(f"config: unknown architecture {arch!r} (known: {', '.join(REQUIRED)})")
    for key, kind in REQUIRED[arch].items():
        if key not in config:
            raise FormatError(f"config: missing key {key!r} for arch {arch}")
        if not _is(config[key], kind):
            raise FormatError(f"config: {key!r} must be {kind.__name__}, got {config[key]!r}")
        if kind is int and not 0 < config[key] <= _LIMITS.get(key, 1 << 32):
            raise FormatError(f"config: {key!r} out of range, got {config[key]}")
        if kind is float:
            _check_float(key, config[key], *_FLOAT_RANGES[key])
    hidden_dims(config)
    _check_tokenizer(config.get("tokenizer"))
    if arch == "llama":
        if config["n_heads"] % config["n_kv_heads"]:
            raise FormatError("config: n_heads must be a multiple of n_kv_heads")
        if config["head_dim"] % 2:
            raise FormatError("config: head_dim must be even for RoPE")
        if config["rope_layout"] not in ROPE_LAYOUTS:
            raise FormatError(f"config: rope_layout must be one of {ROPE_LAYOUTS}")
        _check_rope_scaling(config.get("rope_scaling"))
    if arch == "mpt":
        if config["dim"] % config["n_heads"]:
            raise FormatError("config: dim must be a multiple of n_heads")
        clip = config.get("clip_qkv")
        if clip is not None:
            _check_float("clip_qkv", clip, 0.0, math.inf)


def _check_float(key: str, value: Any, low: float, high: float) -> None:
    """A finite number strictly between low and high (SPEC.md 5: the config's numeric ranges)."""
    if not _is(value, float) or not math.isfinite(value) or not low < value < high:
        raise FormatError(f"config: {key!r} must be a finite number in ({low:g}, {high:g}), got {value!r}")


def _check_rope_scaling(scaling: Any) -> None:
    """null, or {type: linear, factor} or {type: llama3, factor, low/high_freq_factor, original_max_seq_len}."""
    if scaling is None:
        return
    if not isinstance(scaling, dict) or scaling.get("type") not in ROPE_SCALING_KEYS:
        raise FormatError(f"config: rope_scaling must be null or an object with type {' or '.join(ROPE_SCALING_KEYS)}")
    for key in ROPE_SCALING_KEYS[scaling["type"]]:
        if key not in scaling:
            raise FormatError(f"config: rope_scaling of type {scaling['type']} needs {key!r}")
        _check_float(f"rope_scaling.{key}", scaling[key], 0.0, math.inf)
    if scaling["type"] == "llama3":
        if not _is(scaling["original_max_seq_len"], int):
            raise FormatError("config: rope_scaling.original_max_seq_len must be an integer")
        if not scaling["low_freq_factor"] < scaling["high_freq_factor"]:
            raise FormatError("config: rope_scaling.low_freq_factor must be below high_freq_factor")


def _check_tokenizer(info: Any) -> None:
    """The optional tokenizer object: token ids are non-negative ints, chat_template a string."""
    if info is None:
        return
    if not isinstance(info, dict):
        raise FormatError("config: tokenizer must be null or an object")
    for key, kinds in TOKENIZER_KEYS.items():
        value = info.get(key)
        if not isinstance(value, kinds) or (kinds[0] is int and isinstance(value, bool)):
            raise FormatError(f"config: tokenizer.{key} must be {kinds[0].__name__} or null, got {type(value).__name__}")
    ids = ([info["bos_token_id"]] if info.get("bos_token_id") is not None else []) + list(info.get("eos_token_ids") or [])
    if not all(_is(i, int) and 0 <= i < 1 << 32 for i in ids):
        raise FormatError("config: tokenizer token ids must be non-negative integers")


def expected_tensors(config: dict) -> dict[str, tuple[int, ...]]:
    """Every logical tensor name the config implies, with its dense shape (SPEC.md section 5)."""
    check_config(config)
    dim, vocab = config["dim"], config["vocab_size"]
    shapes: dict[str, tuple[int, ...]] = {"token_embd.weight": (vocab, dim), "output_norm.weight": (dim,)}
    if not config["tied_embeddings"]:
        shapes["output.weight"] = (vocab, dim)
    for i, hidden in enumerate(hidden_dims(config)):
        b = f"blk.{i}."
        shapes[b + "attn_norm.weight"] = (dim,)
        shapes[b + "ffn_norm.weight"] = (dim,)
        if config["arch"] == "llama":
            q_dim = config["n_heads"] * config["head_dim"]
            kv_dim = config["n_kv_heads"] * config["head_dim"]
            shapes[b + "attn_q.weight"] = (q_dim, dim)
            shapes[b + "attn_k.weight"] = (kv_dim, dim)
            shapes[b + "attn_v.weight"] = (kv_dim, dim)
            shapes[b + "attn_output.weight"] = (dim, q_dim)
            shapes[b + "ffn_gate.weight"] = (hidden, dim)
        else:
            shapes[b + "attn_qkv.weight"] = (3 * dim, dim)
            shapes[b + "attn_output.weight"] = (dim, dim)
        shapes[b + "ffn_up.weight"] = (hidden, dim)
        shapes[b + "ffn_down.weight"] = (dim, hidden)
    return shapes


def is_shared(name: str, shape: tuple[int, ...], encoding: str) -> bool:
    """Whether the writer puts this tensor in a shared-* file: dense 1-D tensors and the embedding."""
    return encoding == "dense" and (len(shape) == 1 or name == "token_embd.weight")
