"""The compressed-tensors config block of a config.json: detection, format names, weight schemes, target matching,
and the base model a checkpoint's README names. Read as compressed-tensors defines them (docs/interop.md)."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path

from zoo.errors import ConvertError
from zoo.untrusted import MAX_YAML_BYTES, load_yaml

from .hf_source import read_json


class Layout(str, Enum):
    """compressed-tensors format names zoo decodes."""

    DENSE = "dense"
    SPARSE_BITMASK = "sparse-bitmask"
    SPARSE_24 = "sparse-24-bitmask"
    PACKED = "pack-quantized"
    INT = "int-quantized"
    NAIVE = "naive-quantized"
    FLOAT = "float-quantized"


REFUSED = {  # format -> why zoo cannot read it
    "marlin-24": "a GPU kernel layout (Marlin tiles, CUTLASS metadata) without a published specification",
    "nvfp4-pack-quantized": "FP4 weights with global scales are not supported",
    "mxfp4-pack-quantized": "FP4 weights with shared exponents are not supported",
}
_STRATEGIES = ("tensor", "channel", "group", "block")


def ct_config(config_json: Path) -> dict | None:
    """The compressed-tensors block of a config.json, or None when the checkpoint is not compressed-tensors."""
    try:
        cfg = read_json(config_json)
    except ConvertError:
        return None  # HFSource reports an unreadable, oversized or malformed config.json
    qc = cfg.get("quantization_config") or cfg.get("compression_config") if isinstance(cfg, dict) else None
    if isinstance(qc, dict) and (qc.get("quant_method") == "compressed-tensors" or qc.get("sparsity_config")):
        return qc
    return None


def weight_args(args: dict, where: str) -> dict:
    """A config group's `weights` normalised (strategy inferred as compressed-tensors does); ConvertError if not
    supported."""
    kind, bits = args.get("type", "int"), args.get("num_bits", 8)
    strategy, gs = args.get("strategy"), args.get("group_size")
    if strategy is None:
        strategy = "tensor" if gs is None else "channel" if gs == -1 else "group"
    supported = kind == "int" or (kind == "float" and bits == 8)
    if not supported or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ConvertError(f"{where}: weight type {kind} with {bits} bits is not supported (int 1-8, float 8 bits)")
    if strategy not in _STRATEGIES:
        raise ConvertError(f"{where}: weight strategy {strategy!r} is not supported ({', '.join(_STRATEGIES)})")
    if args.get("dynamic"):
        raise ConvertError(f"{where}: dynamic weight quantization is not supported")
    if strategy == "group" and (not isinstance(gs, int) or gs <= 0):
        raise ConvertError(f"{where}: group strategy needs a positive group_size, got {gs!r}")
    block = args.get("block_structure")
    if strategy == "block" and (not isinstance(block, list) or len(block) != 2 or min(block) <= 0):
        raise ConvertError(f"{where}: block strategy needs block_structure [rows, cols], got {block!r}")
    return {"type": kind, "bits": bits, "symmetric": bool(args.get("symmetric", True)), "strategy": strategy,
            "group_size": gs, "block": block}


def targets_match(targets: list, hf_module: str, linear: bool = True) -> bool:
    """compressed-tensors target matching: exact module name, `re:` regex (re.match), or the class `Linear`."""
    for t in targets or []:
        if t == hf_module or (linear and t == "Linear") or (t.startswith("re:") and re.match(t[3:], hf_module)):
            return True
    return False


def front_matter_base(path: Path) -> str | list | None:
    """`base_model` from README.md's YAML front matter (what the Hub shows as the model this one derives from)."""
    readme = path / "README.md"
    if not readme.is_file():
        return None
    with open(readme, "rb") as f:  # the front matter opens the file: a card's worth of bytes holds it
        head = f.read(MAX_YAML_BYTES).decode("utf-8", errors="replace")
    parts = head.split("---", 2)
    if len(parts) < 3 or parts[0].strip():
        return None
    try:
        meta = load_yaml(parts[1], f"{readme}: front matter", ConvertError)
    except ConvertError:
        return None  # the base model is a hint for the card: a malformed or hostile README only loses it
    base = meta.get("base_model") if isinstance(meta, dict) else None
    return base if isinstance(base, (str, list)) else None


def parse_quantization(qc: dict, where: str) -> dict:
    """The config groups that quantize weights: name -> {targets, format, weights (normalised)}."""
    groups = {}
    for gname, g in (qc.get("config_groups") or {}).items():
        if not isinstance(g, dict):
            raise ConvertError(f"{where}: config group {gname!r} is not a mapping")
        if g.get("weights") is None:
            continue  # activation / KV-cache only: zoo's kernels quantize activations themselves
        fmt = g.get("format") or qc.get("format") or Layout.DENSE.value
        groups[gname] = {"targets": g.get("targets") or [], "format": fmt,
                         "weights": weight_args(g["weights"], f"{where}: config group {gname}")}
    return groups
