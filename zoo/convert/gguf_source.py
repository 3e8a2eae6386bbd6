"""GGUF files as a Source: metadata -> zoo config, dequantized tensors, tokenizer.json (via `gguf`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.errors import ConvertError

from .gguf_rope import llama3_scaling
from .gguf_tokenizer import build_tokenizer_json
from .source import Source, check_against_config, unpermute_rope_rows


def _value(field):
    """A GGUF field's Python value (str, number, or list)."""
    return field.contents()


class GGUFSource(Source):
    """A GGUF file (llama or mpt architecture), read with `gguf.GGUFReader` (mmap)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        import gguf

        try:
            self._reader = gguf.GGUFReader(str(path))
        except Exception as err:  # gguf raises ValueError/struct errors on corrupt files
            raise ConvertError(f"{path}: not a readable GGUF file ({err})") from None
        self.files = [path]
        kv = {k: _value(f) for k, f in self._reader.fields.items()
              if k not in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type")}
        self._kv = kv
        self._tensors = {t.name: t for t in self._reader.tensors}
        self.config = self._config(kv)
        found = {n: tuple(int(d) for d in reversed(t.shape.tolist())) for n, t in self._tensors.items()}
        self._expected = check_against_config(self.config, found, str(path))
        self.description = f"GGUF {path.name} ({kv.get('general.name', '?')}, {self.config['arch']})"
        self.tokenizer_json = self._tokenizer()

    def _config(self, kv: dict) -> dict:
        arch = kv.get("general.architecture")
        if arch not in ("llama", "mpt"):
            raise ConvertError(f"GGUF architecture {arch!r} is not supported (supported: llama, mpt)")
        g = lambda key, default=None: kv.get(f"{arch}.{key}", default)  # noqa: E731
        try:
            dim, n_heads = int(g("embedding_length")), int(g("attention.head_count"))
            config = {"arch": arch, "dim": dim, "hidden_dim": int(g("feed_forward_length")),
                      "n_layers": int(g("block_count")), "n_heads": n_heads,
                      "vocab_size": int(g("vocab_size", len(self._reader.fields["tokenizer.ggml.tokens"].data))),
                      "max_seq_len": int(g("context_length")),
                      "tied_embeddings": "output.weight" not in self._tensors}
        except (TypeError, KeyError) as err:
            raise ConvertError(f"GGUF: missing metadata for {arch} ({err})") from None
        if arch == "llama":
            n_kv = int(g("attention.head_count_kv", n_heads))
            head_dim = int(g("attention.key_length", dim // n_heads))
            if int(g("rope.dimension_count", head_dim)) != head_dim:
                raise ConvertError("GGUF: partial rotary embeddings are not supported")
            theta = float(g("rope.freq_base", 10000.0))
            kind = g("rope.scaling.type") or "none"
            if kind not in ("none", "linear"):
                raise ConvertError(f"GGUF: RoPE scaling {kind!r} is not supported (linear, llama3 as rope_freqs)")
            scaling = {"type": "linear", "factor": float(g("rope.scaling.factor"))} if kind == "linear" else None
            freqs = self._tensors.pop("rope_freqs.weight", None)  # Llama 3.1 scaling, as llama.cpp stores it
            if freqs is not None:
                if scaling is not None:
                    raise ConvertError("GGUF: both rope_freqs and linear RoPE scaling; only one is supported")
                scaling = llama3_scaling(np.asarray(freqs.data), head_dim, theta)
            config.update(n_kv_heads=n_kv, head_dim=head_dim, norm_eps=float(g("attention.layer_norm_rms_epsilon")),
                          rope_theta=theta, rope_scaling=scaling, rope_layout="half")
        else:
            clip = g("attention.clamp_kqv")
            config.update(norm_eps=float(g("attention.layer_norm_epsilon", 1e-5)),
                          alibi_bias_max=float(g("attention.max_alibi_bias", 8.0)),
                          clip_qkv=None if clip is None else float(clip))
        config["tokenizer"] = self._tokenizer_config(kv)
        return config

    def _tokenizer_config(self, kv: dict) -> dict:
        eos = kv.get("tokenizer.ggml.eos_token_id")
        eot = kv.get("tokenizer.ggml.eot_token_id")
        ids = [int(i) for i in (eos, eot) if i is not None]
        return {"bos_token_id": kv.get("tokenizer.ggml.bos_token_id"), "eos_token_ids": sorted(set(ids)),
                "add_bos": bool(kv.get("tokenizer.ggml.add_bos_token", False)),
                "chat_template": kv.get("tokenizer.chat_template")}

    def _tokenizer(self) -> bytes | None:
        if "tokenizer.ggml.tokens" not in self._reader.fields:
            return None
        fields = dict(self._kv)
        for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"):
            if key in self._reader.fields:
                fields[key] = _value(self._reader.fields[key])
        return build_tokenizer_json(fields)

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        return self._expected

    def _load(self, name: str) -> np.ndarray:
        from gguf import quants

        t = self._tensors[name]
        try:
            w = quants.dequantize(t.data, t.tensor_type).reshape(self._expected[name])
        except NotImplementedError:
            raise ConvertError(f"GGUF tensor {name}: quantization {t.tensor_type.name} is not supported") from None
        if self.config["arch"] == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = self.config["n_heads"] if name.endswith("attn_q.weight") else self.config["n_kv_heads"]
            w = unpermute_rope_rows(w, heads)
        return w
