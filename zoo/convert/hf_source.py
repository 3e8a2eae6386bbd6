"""Hugging Face checkpoint directories as a Source: config.json + *.safetensors (+ index, tokenizer)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ConvertError
from zoo.untrusted import MAX_HEADER_BYTES, loads_json

from .source import Source, check_against_config

# A checkpoint comes from strangers: its JSON files are read within these limits (and loads_json's depth and
# duplicate-key checks), so a huge or hostile file is a ConvertError, not a MemoryError or a RecursionError.
MAX_CONFIG_BYTES = 16 << 20  # config.json, tokenizer_config.json, generation_config.json (real ones: kilobytes)
MAX_TOKENIZER_BYTES = MAX_HEADER_BYTES  # tokenizer.json (real ones: up to tens of megabytes)

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}

# HF parameter name (with {i} for the layer) -> GGUF-style name
LLAMA_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{i}.input_layernorm.weight": "blk.{i}.attn_norm.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "blk.{i}.ffn_norm.weight",
    "model.layers.{i}.self_attn.q_proj.weight": "blk.{i}.attn_q.weight",
    "model.layers.{i}.self_attn.k_proj.weight": "blk.{i}.attn_k.weight",
    "model.layers.{i}.self_attn.v_proj.weight": "blk.{i}.attn_v.weight",
    "model.layers.{i}.self_attn.o_proj.weight": "blk.{i}.attn_output.weight",
    "model.layers.{i}.mlp.gate_proj.weight": "blk.{i}.ffn_gate.weight",
    "model.layers.{i}.mlp.up_proj.weight": "blk.{i}.ffn_up.weight",
    "model.layers.{i}.mlp.down_proj.weight": "blk.{i}.ffn_down.weight",
}
MPT_NAMES = {
    "transformer.wte.weight": "token_embd.weight", "transformer.norm_f.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "transformer.blocks.{i}.norm_1.weight": "blk.{i}.attn_norm.weight",
    "transformer.blocks.{i}.norm_2.weight": "blk.{i}.ffn_norm.weight",
    "transformer.blocks.{i}.attn.Wqkv.weight": "blk.{i}.attn_qkv.weight",
    "transformer.blocks.{i}.attn.out_proj.weight": "blk.{i}.attn_output.weight",
    "transformer.blocks.{i}.ffn.up_proj.weight": "blk.{i}.ffn_up.weight",
    "transformer.blocks.{i}.ffn.down_proj.weight": "blk.{i}.ffn_down.weight",
}


def read_header(path: Path) -> tuple[dict, int]:
    """safetensors header (tensor entries) and the data section's file offset."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise ConvertError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        if n > min(MAX_HEADER_BYTES, path.stat().st_size - 8):
            raise ConvertError(f"{path}: bad safetensors header size")
        header = loads_json(fh.read(n), f"{path}: safetensors header", ConvertError)
    if not isinstance(header, dict):
        raise ConvertError(f"{path}: safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    if not all(isinstance(entry, dict) for entry in header.values()):
        raise ConvertError(f"{path}: safetensors header has an entry that is not a JSON object")
    return header, 8 + n


def read_bounded(path: Path, max_bytes: int) -> bytes:
    """A checkpoint file's bytes, refused (ConvertError) when unreadable or larger than `max_bytes`."""
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as err:
        raise ConvertError(f"{path}: unreadable ({err.strerror or err})") from None
    if len(data) > max_bytes:
        raise ConvertError(f"{path}: larger than the limit of {max_bytes} bytes")
    return data


def read_json(path: Path, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """A checkpoint's JSON file parsed within the readers' limits (size, depth, duplicate keys); ConvertError
    otherwise."""
    return loads_json(read_bounded(path, max_bytes), str(path), ConvertError, max_bytes=max_bytes)


def read_tokenizer_json(path: Path) -> bytes | None:
    """The checkpoint's tokenizer.json as bytes (None without one), parsed once within the readers' limits so a
    hostile one is a ConvertError before anything is written."""
    tj = path / "tokenizer.json"
    if not tj.is_file():
        return None
    data = read_bounded(tj, MAX_TOKENIZER_BYTES)
    loads_json(data, str(tj), ConvertError, max_bytes=MAX_TOKENIZER_BYTES)
    return data


def zoo_config(cfg: dict, where: str) -> tuple[dict, dict]:
    """zoo config and the name table from a transformers config.json."""
    kind = cfg.get("model_type")
    if kind == "llama":
        if cfg.get("attention_bias") or cfg.get("mlp_bias"):
            raise ConvertError(f"{where}: Llama with linear biases is not supported")
        if cfg.get("hidden_act", "silu") != "silu":
            raise ConvertError(f"{where}: hidden_act {cfg.get('hidden_act')!r} is not supported")
        rope = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
        theta = cfg.get("rope_theta", rope.get("rope_theta", 10000.0))
        rtype = rope.get("rope_type", rope.get("type", "default"))
        if rtype in ("default", None):
            scaling = None
        elif rtype == "linear":
            scaling = {"type": "linear", "factor": float(rope["factor"])}
        elif rtype == "llama3":
            scaling = {"type": "llama3", "factor": float(rope["factor"]),
                       "low_freq_factor": float(rope["low_freq_factor"]),
                       "high_freq_factor": float(rope["high_freq_factor"]),
                       "original_max_seq_len": int(rope["original_max_position_embeddings"])}
        else:
            raise ConvertError(f"{where}: RoPE scaling {rtype!r} is not supported (linear, llama3)")
        n_heads = cfg["num_attention_heads"]
        config = {"arch": "llama", "dim": cfg["hidden_size"], "hidden_dim": cfg["intermediate_size"],
                  "n_layers": cfg["num_hidden_layers"], "n_heads": n_heads,
                  "n_kv_heads": cfg.get("num_key_value_heads") or n_heads,
                  "head_dim": cfg.get("head_dim") or cfg["hidden_size"] // n_heads,
                  "vocab_size": cfg["vocab_size"], "max_seq_len": cfg.get("max_position_embeddings", 2048),
                  "norm_eps": float(cfg.get("rms_norm_eps", 1e-6)), "rope_theta": float(theta),
                  "rope_scaling": scaling, "rope_layout": "half",
                  "tied_embeddings": bool(cfg.get("tie_word_embeddings", False))}
        return config, LLAMA_NAMES
    if kind == "mpt":
        attn = cfg.get("attn_config") or {}
        if not attn.get("alibi", True) or attn.get("qk_ln"):
            raise ConvertError(f"{where}: MPT without ALiBi or with qk_ln is not supported")
        if attn.get("softmax_scale") is not None:
            raise ConvertError(f"{where}: MPT with a custom softmax_scale is not supported")
        dim = cfg.get("d_model", cfg.get("hidden_size"))
        config = {"arch": "mpt", "dim": dim, "hidden_dim": 4 * dim,  # transformers' MptMLP is always 4x
                  "n_layers": cfg["n_layers"], "n_heads": cfg["n_heads"], "vocab_size": cfg["vocab_size"],
                  "max_seq_len": cfg.get("max_seq_len", 2048), "norm_eps": float(cfg.get("layer_norm_epsilon", 1e-5)),
                  "alibi_bias_max": float(attn.get("alibi_bias_max", 8)),
                  "clip_qkv": None if attn.get("clip_qkv") is None else float(attn["clip_qkv"]),
                  "tied_embeddings": bool(cfg.get("tie_word_embeddings", True))}
        return config, MPT_NAMES
    raise ConvertError(f"{where}: architecture {kind!r} is not supported (supported: llama, mpt)")


def expand_names(table: dict, n_layers: int) -> dict[str, str]:
    """A name table (LLAMA_NAMES, MPT_NAMES) with `{i}` expanded for every layer: HF name -> zoo name."""
    out = {}
    for hf, ours in table.items():
        if "{i}" in hf:
            for i in range(n_layers):
                out[hf.format(i=i)] = ours.format(i=i)
        else:
            out[hf] = ours
    return out


class HFSource(Source):
    """A transformers checkpoint directory; safetensors read by mmap (BF16 kept as raw bits)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        cfg = read_json(path / "config.json")
        if not isinstance(cfg, dict):
            raise ConvertError(f"{path}/config.json: not a JSON object")
        self.config, table = zoo_config(cfg, str(path))
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise ConvertError(f"{path}: no *.safetensors files (pytorch .bin checkpoints are not supported)")
        self.files = files
        rename = expand_names(table, self.config["n_layers"])
        self._where: dict[str, tuple[Path, int, dict]] = {}  # our name -> (file, data start, entry)
        found = {}
        for f in files:
            header, start = read_header(f)
            for hf_name, entry in header.items():
                ours = rename.get(hf_name)
                if ours is None:
                    if hf_name.endswith(("rotary_emb.inv_freq",)):
                        continue
                    raise ConvertError(f"{f}: unexpected tensor {hf_name} for {self.config['arch']}")
                if entry.get("dtype") not in _DTYPES:
                    raise ConvertError(f"{f}: tensor {hf_name} has unsupported dtype {entry.get('dtype')}")
                self._where[ours] = (f, start, entry)
                found[ours] = tuple(entry["shape"])
        if self.config["tied_embeddings"] and "output.weight" in found:
            self.config["tied_embeddings"] = False  # a separate lm_head was saved: keep it
        self._expected = check_against_config(self.config, found, str(path))
        self.config["tokenizer"] = tokenizer_info(path, cfg)
        self.tokenizer_json = read_tokenizer_json(path)
        self.description = f"Hugging Face checkpoint {path.name} ({self.config['arch']})"

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        return self._expected

    def _load(self, name: str) -> np.ndarray:
        f, start, entry = self._where[name]
        begin, end = entry["data_offsets"]
        dtype = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
        count = (end - begin) // dtype.itemsize
        raw = np.memmap(f, dtype=dtype, mode="r", offset=start + begin, shape=(count,))
        if entry["dtype"] == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])
        return np.asarray(raw, dtype=np.float32).reshape(entry["shape"])


def tokenizer_info(path: Path, cfg: dict) -> dict:
    """bos/eos ids, add_bos and chat template from tokenizer_config.json / generation_config.json."""
    def load(name: str) -> dict:
        p = path / name
        doc = read_json(p) if p.is_file() else {}
        if not isinstance(doc, dict):
            raise ConvertError(f"{p}: not a JSON object")
        return doc

    tcfg, gen = load("tokenizer_config.json"), load("generation_config.json")
    eos = gen.get("eos_token_id", cfg.get("eos_token_id"))
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
    template = tcfg.get("chat_template")
    if template is None and (path / "chat_template.jinja").is_file():
        template = (path / "chat_template.jinja").read_text()
    if isinstance(template, list):  # named templates: keep the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return {"bos_token_id": gen.get("bos_token_id", cfg.get("bos_token_id")), "eos_token_ids": eos_ids,
            "add_bos": bool(tcfg.get("add_bos_token", False)), "chat_template": template}
