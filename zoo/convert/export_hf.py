"""`export_hf(artifact, out)`: a zoo artifact as a Hugging Face checkpoint that transformers loads.

Writes config.json (LlamaForCausalLM or MptForCausalLM), model.safetensors (shards and an index past
SHARD_BYTES; written with the `safetensors` library), tokenizer.json, tokenizer_config.json (with the
chat template), generation_config.json and a README.md from the zoo card. Weights are decoded from
their zoo encoding to float16 by default: transformers' usual type, half the bytes of float32, and the
rounding it adds to a dequantized q4/q8 value (relative 2**-11) is two orders below the quantization
step; `dtype="f32"` stores every decoded value exactly. Zeros stay exact zeros in both, stored densely.
No zoo.yaml is written: zoo would take the directory for an artifact instead of a checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from zoo.errors import ConvertError

from .export_weights import ExportResult, ExportWeights, as_dtype, hidden_of
from .hf_source import LLAMA_NAMES, MPT_NAMES, expand_names
from .staging import check_destination, staged

HF_DTYPES = {"f16": (np.float16, "float16"), "f32": (np.float32, "float32")}
SHARD_BYTES = 2 << 30  # the most one model-*.safetensors holds (and about the most held in memory)


def export_hf(artifact: str | Path, out: str | Path, dtype: str = "f16",
              progress: Callable[[int, int, str], None] | None = None, shard_bytes: int = SHARD_BYTES,
              verify: bool = False) -> ExportResult:
    """Write the artifact at `artifact` as a transformers checkpoint directory at `out`.

    Tensors go into model.safetensors, or past `shard_bytes` into numbered shards with an index;
    `verify` checks the artifact's files against its card's sha256 first.
    """
    if dtype not in HF_DTYPES:
        raise ConvertError(f"--type {dtype!r} is not available for --to hf (choose from {', '.join(HF_DTYPES)})")
    np_dtype, torch_name = HF_DTYPES[dtype]
    check_destination(Path(out), directory=True)  # before any decoding: refuse early
    weights = ExportWeights(artifact, _mlp_width, verify=verify)
    config = weights.config
    hf_name = {ours: hf for hf, ours in expand_names(LLAMA_NAMES if config["arch"] == "llama" else MPT_NAMES,
                                                config["n_layers"]).items()}
    names = weights.names
    sizes = [int(np.prod(weights.shape(n))) * np.dtype(np_dtype).itemsize for n in names]
    shards = _plan_shards(sizes, shard_bytes)
    with staged(out, directory=True) as tmp:
        index: dict[str, str] = {}
        for k, members in enumerate(shards):
            file = "model.safetensors" if len(shards) == 1 else f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
            tensors = {}
            for i in members:
                if progress:
                    progress(i, len(names), names[i])
                tensors[hf_name[names[i]]] = np.ascontiguousarray(as_dtype(names[i], weights.tensor(names[i]), np_dtype))
                index[hf_name[names[i]]] = file
            _save(tensors, tmp / file)
            del tensors
        if len(shards) > 1:
            _write_json(tmp / "model.safetensors.index.json", {"metadata": {"total_size": sum(sizes)},
                                                               "weight_map": index})
        _write_json(tmp / "config.json", hf_config(config, torch_name))
        tok = config.get("tokenizer") or {}
        _write_json(tmp / "generation_config.json", _generation_config(tok))
        if weights.tokenizer_json is not None:
            (tmp / "tokenizer.json").write_bytes(weights.tokenizer_json)
            _write_json(tmp / "tokenizer_config.json", _tokenizer_config(weights.tokenizer_json, tok, config))
        result = ExportResult(Path(out), "hf", dtype, 0, weights.zeros, weights.weights, weights.padded, [])
        (tmp / "README.md").write_text(readme(weights.card, config, result), encoding="utf-8")
        result.size_bytes = sum(f.stat().st_size for f in tmp.iterdir())
    return result


def _mlp_width(config: dict) -> int:
    """transformers' MPT MLP is always 4 x d_model wide (narrower, neuron-pruned layers are padded up to it);
    a Llama's is intermediate_size, the widest layer's."""
    return 4 * config["dim"] if config["arch"] == "mpt" else max(hidden_of(config))


def _plan_shards(sizes: list[int], limit: int) -> list[list[int]]:
    """Tensor indices per shard, in order, each shard at most `limit` bytes (a bigger tensor alone)."""
    shards: list[list[int]] = [[]]
    used = 0
    for i, size in enumerate(sizes):
        if shards[-1] and used + size > limit:
            shards.append([])
            used = 0
        shards[-1].append(i)
        used += size
    return shards


def _save(tensors: dict[str, np.ndarray], path: Path) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, str(path), metadata={"format": "pt"})  # transformers refuses files without "format"


def _write_json(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _eos(tok: dict) -> int | list[int] | None:
    ids = list(tok.get("eos_token_ids") or [])
    return None if not ids else ids[0] if len(ids) == 1 else ids


def hf_config(config: dict, torch_dtype: str) -> dict:
    """transformers config.json for a zoo Llama or MPT config (MLP width already uniform)."""
    tok = config.get("tokenizer") or {}
    common = {"vocab_size": config["vocab_size"], "tie_word_embeddings": config["tied_embeddings"],
              "torch_dtype": torch_dtype, **_generation_config(tok)}
    if config["arch"] == "llama":
        return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": config["dim"],
                "intermediate_size": config["hidden_dim"], "num_hidden_layers": config["n_layers"],
                "num_attention_heads": config["n_heads"], "num_key_value_heads": config["n_kv_heads"],
                "head_dim": config["head_dim"], "max_position_embeddings": config["max_seq_len"],
                "rms_norm_eps": config["norm_eps"], "rope_theta": config["rope_theta"],
                "rope_scaling": _rope_scaling(config.get("rope_scaling")), "hidden_act": "silu",
                "attention_bias": False, "mlp_bias": False, **common}
    if config["alibi_bias_max"] != int(config["alibi_bias_max"]):
        raise ConvertError(f"MPT alibi_bias_max {config['alibi_bias_max']} is not an integer, as transformers needs")
    attn = {"alibi": True, "alibi_bias_max": int(config["alibi_bias_max"]), "clip_qkv": config.get("clip_qkv")}
    return {"architectures": ["MptForCausalLM"], "model_type": "mpt", "d_model": config["dim"],
            "n_heads": config["n_heads"], "n_layers": config["n_layers"], "expansion_ratio": 4,
            "max_seq_len": config["max_seq_len"], "layer_norm_epsilon": config["norm_eps"], "no_bias": True,
            "attn_config": attn, **common}


def _rope_scaling(scaling: dict | None) -> dict | None:
    if scaling is None:
        return None
    if scaling["type"] == "linear":
        return {"rope_type": "linear", "factor": scaling["factor"]}
    return {"rope_type": "llama3", "factor": scaling["factor"], "low_freq_factor": scaling["low_freq_factor"],
            "high_freq_factor": scaling["high_freq_factor"],
            "original_max_position_embeddings": scaling["original_max_seq_len"]}


def _generation_config(tok: dict) -> dict:
    doc = {"bos_token_id": tok.get("bos_token_id"), "eos_token_id": _eos(tok)}
    return {k: v for k, v in doc.items() if v is not None}


def _tokenizer_config(tokenizer_json: bytes, tok: dict, config: dict) -> dict:
    """tokenizer_config.json: the fast tokenizer class, BOS/EOS as tokens, add_bos and the chat template."""
    from tokenizers import Tokenizer

    t = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
    eos = tok.get("eos_token_ids") or []
    doc = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": bool(tok.get("add_bos")),
           "add_eos_token": False, "clean_up_tokenization_spaces": False, "model_max_length": config["max_seq_len"]}
    if tok.get("bos_token_id") is not None:
        doc["bos_token"] = t.id_to_token(tok["bos_token_id"])
    if eos:
        doc["eos_token"] = t.id_to_token(eos[0])
    if tok.get("chat_template"):
        doc["chat_template"] = tok["chat_template"]
    return doc


def readme(card: dict, config: dict, result: ExportResult) -> str:
    """README.md: the zoo card through card.to_hf_readme, for transformers (library_name) and text generation."""
    from zoo.card import to_hf_readme

    body = (f"Exported from the zoo artifact `{card.get('name') or result.path.name}` with `zoo export --to hf` "
            f"({result.dtype}). {result.sparsity:.1%} of the linear weights are zero; they stay exact zeros "
            "here but are stored densely, so this checkpoint is as large and as fast as the dense model; "
            "the zoo artifact keeps them compact and skips them.\n")
    return to_hf_readme({**card, "architecture": config["arch"]}, body=body, library_name="transformers",
                        pipeline_tag="text-generation")
