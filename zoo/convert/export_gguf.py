"""`export_gguf(artifact, out, qtype)`: a zoo artifact as one GGUF file that llama.cpp loads (via `gguf`).

Metadata under llama.cpp's keys for the llama and mpt architectures, the tokenizer as `tokenizer.ggml.*`
(gguf_vocab), tensors under the names zoo already uses (GGUF's). Llama Q and K rows are permuted into
llama.cpp's interleaved RoPE order, the exact inverse of what GGUFSource undoes on import. Matrices are
stored F16, Q8_0 or Q4_0 (`gguf.quants`; both are symmetric, so a zero stays exactly zero), except a
matrix whose rows are not whole 32-value blocks, which stays F16; norms are F32 as in llama.cpp's files.
The file is written in two passes (tensor infos, then data tensor by tensor), so memory stays near one
tensor whatever the model's size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from zoo.errors import ConvertError

from .export_weights import ExportResult, ExportWeights, as_dtype
from .gguf_rope import rope_freq_factors
from .gguf_vocab import gguf_vocab
from .staging import check_destination, staged

GGUF_TYPES = ("f16", "q8_0", "q4_0")


def permute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Hugging Face "half" Q/K rows -> llama.cpp's interleaved order (inverse of source.unpermute_rope_rows).

    llama.cpp's converter maps each head's rows [a0..a(h/2-1), b0..] to [a0, b0, a1, b1, ...].
    """
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def export_gguf(artifact: str | Path, out: str | Path, qtype: str = "f16",
                progress: Callable[[int, int, str], None] | None = None, verify: bool = False) -> ExportResult:
    """Write the artifact at `artifact` as a GGUF file at `out` with matrices in `qtype` (see GGUF_TYPES);
    `verify` checks the artifact's files against its card's sha256 first."""
    import gguf

    if qtype not in GGUF_TYPES:
        raise ConvertError(f"--type {qtype!r} is not available for --to gguf (choose from {', '.join(GGUF_TYPES)})")
    check_destination(Path(out), directory=False)  # before any decoding: refuse early
    weights = ExportWeights(artifact, verify=verify)
    config = weights.config
    if weights.tokenizer_json is None:
        raise ConvertError(f"{artifact}: the artifact has no tokenizer.json, and llama.cpp needs a vocabulary")
    vocab = gguf_vocab(weights.tokenizer_json, config["vocab_size"])
    matrix_type = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0,
                   "q4_0": gguf.GGMLQuantizationType.Q4_0}[qtype]
    block = gguf.GGML_QUANT_SIZES[matrix_type][0]
    types, fallback = {}, []
    for name in weights.names:
        shape = weights.shape(name)
        if len(shape) == 1:
            types[name] = gguf.GGMLQuantizationType.F32
        elif shape[1] % block:
            types[name] = gguf.GGMLQuantizationType.F16
            fallback.append(name)
        else:
            types[name] = matrix_type
    with staged(out, directory=False) as tmp:
        writer = gguf.GGUFWriter(str(tmp), config["arch"])
        try:
            _metadata(writer, weights, qtype, vocab)
            for name in weights.names:  # pass 1: every tensor's name, shape, type and size
                shape = weights.shape(name)
                nbytes = int(np.prod(gguf.quant_shape_to_byte_shape(shape, types[name])))
                writer.add_tensor_info(name, shape, np.dtype(np.float32), nbytes, raw_dtype=types[name])
            factors = rope_freq_factors(config)
            if factors is not None:
                writer.add_tensor_info("rope_freqs.weight", factors.shape, factors.dtype, factors.nbytes)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for i, name in enumerate(weights.names):  # pass 2: the data, in the same order
                if progress:
                    progress(i, len(weights.names), name)
                writer.write_tensor_data(_encoded(name, weights.tensor(name), types[name], config))
            if factors is not None:
                writer.write_tensor_data(factors)
        finally:
            writer.close()
        size = tmp.stat().st_size
    return ExportResult(Path(out), "gguf", qtype, size, weights.zeros, weights.weights, weights.padded, fallback)


def _encoded(name: str, w: np.ndarray, qtype, config: dict) -> np.ndarray:
    """The tensor's bytes as GGUF stores them: Q/K permuted (llama), then F32, F16 or quantized blocks."""
    from gguf import GGMLQuantizationType, quants

    if config["arch"] == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
        w = permute_rope_rows(w, config["n_heads"] if name.endswith("attn_q.weight") else config["n_kv_heads"])
    if qtype == GGMLQuantizationType.F32:
        return np.ascontiguousarray(w, dtype=np.float32)
    if qtype == GGMLQuantizationType.F16:
        return np.ascontiguousarray(as_dtype(name, w, np.float16))
    return quants.quantize(np.ascontiguousarray(w, dtype=np.float32), qtype)


def _metadata(writer, weights: ExportWeights, qtype: str, vocab) -> None:
    """general.*, the architecture's hyperparameters and tokenizer.ggml.* under llama.cpp's keys."""
    import gguf

    config, card = weights.config, weights.card
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(card.get("name") or weights.path.name)
    if card.get("description"):
        writer.add_description(card["description"])
    if card.get("license"):
        writer.add_license(card["license"])
    writer.add_file_type({"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                          "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[qtype])
    if qtype != "f16":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_context_length(config["max_seq_len"])
    writer.add_embedding_length(config["dim"])
    writer.add_block_count(config["n_layers"])
    writer.add_feed_forward_length(config["hidden_dim"])
    writer.add_head_count(config["n_heads"])
    if config["arch"] == "llama":
        writer.add_head_count_kv(config["n_kv_heads"])
        writer.add_key_length(config["head_dim"])
        writer.add_value_length(config["head_dim"])
        writer.add_rope_dimension_count(config["head_dim"])
        writer.add_rope_freq_base(config["rope_theta"])
        writer.add_layer_norm_rms_eps(config["norm_eps"])
        if (config.get("rope_scaling") or {}).get("type") == "linear":  # llama3: the rope_freqs tensor instead
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(config["rope_scaling"]["factor"])
    else:
        writer.add_layer_norm_eps(config["norm_eps"])
        writer.add_max_alibi_bias(config["alibi_bias_max"])
        if config.get("clip_qkv") is not None:
            writer.add_clamp_kqv(config["clip_qkv"])
    tok = config.get("tokenizer") or {}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    if tok.get("bos_token_id") is not None:
        writer.add_bos_token_id(tok["bos_token_id"])
    eos = sorted(tok.get("eos_token_ids") or [])
    if eos:  # GGUFSource reads eos and eot back as the set of stop tokens
        writer.add_eos_token_id(eos[0])
    if len(eos) > 1:
        writer.add_eot_token_id(eos[1])
    writer.add_add_bos_token(bool(tok.get("add_bos")))
    if tok.get("chat_template"):
        writer.add_chat_template(tok["chat_template"])
