"""The numba runtime's model graph for Llama and MPT: encoded weights, buffers and KV cache allocated once.

`Model.load(path)` opens the artifact (mmap), validates it, then `forward(ids, pos)` runs T tokens
at positions pos..pos+T-1 through every block: several tokens go op by op through the batched
kernels (`zoo.kernels.linear` dispatches on the shape of x); one token of a Llama model goes through
`zoo.kernels.decode.decode_llama`, the whole step in one numba call, when its encodings allow (else op
by op through the matvec kernels). Weights are never densified.
"""

from __future__ import annotations

import mmap
import time
from pathlib import Path

import numpy as np

from zoo.errors import RuntimeModelError
from zoo.format import open_artifact
from zoo.format.architectures import hidden_dims
from zoo.format.constants import bf16_to_f32

import zoo.kernels as K
from zoo.errors import KernelError
from zoo.kernels import ops as FA

from .embedding import embed_rows

SUPPORTED = ("llama", "mpt")


def lazy_zeros(shape: tuple[int, ...]) -> np.ndarray:
    """float32 zeros on an anonymous mmap: pages are committed (4 KiB at a time) only when written.

    np.zeros asks for transparent huge pages on large arrays, so writing one position of each KV head
    commits 2 MiB; the KV cache would cost RSS for the whole context up front.
    """
    nbytes = max(4, int(np.prod(shape)) * 4)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=np.float32, count=int(np.prod(shape))).reshape(shape)


def _dense_f32(t) -> np.ndarray:
    """A small dense 1-D tensor (a norm weight) as float32."""
    a = t.parts[""]
    return np.ascontiguousarray(bf16_to_f32(a) if a.dtype == np.uint16 else a, dtype=np.float32)


class Model:
    """A loaded model: config, encoded weights (views on the mmapped files), buffers, KV cache."""

    def __init__(self, path: Path, config: dict, tensors: dict, ctx: int | None = None, chunk: int = 128,
                 fused: bool = True) -> None:
        if config.get("arch") not in SUPPORTED:
            raise RuntimeModelError(f"architecture {config.get('arch')!r} is not supported by the runtime")
        self.path, self.config, self.w = path, config, tensors
        c = config
        self.arch, self.dim, self.n_layers = c["arch"], c["dim"], c["n_layers"]
        self.vocab_size = c["vocab_size"]
        self.ctx = min(ctx or c["max_seq_len"], c["max_seq_len"])
        self.chunk = max(1, chunk)
        if self.arch == "llama":
            self.n_heads, self.n_kv, self.head_dim = c["n_heads"], c["n_kv_heads"], c["head_dim"]
            # float32 [ctx, head_dim/2]
            self.cos, self.sin = K.rope_tables(self.head_dim, self.ctx, c["rope_theta"], c.get("rope_scaling"))
            self.rope_layout = c["rope_layout"]
            self.slopes = None
        else:
            self.n_heads = self.n_kv = c["n_heads"]
            self.head_dim = self.dim // self.n_heads
            self.slopes = K.alibi_slopes(self.n_heads, c["alibi_bias_max"])
        self._linear, prepare = K.linear, K.prepare
        self.norms = {n: _dense_f32(t) for n, t in tensors.items() if len(t.shape) == 1}
        # linear weights checked once (zero-copy flat views of the mmapped parts)
        self.lin = {n: prepare(t) for n, t in tensors.items() if len(t.shape) == 2 and n != "token_embd.weight"}
        self.head = self.lin["output.weight"] if "output.weight" in self.lin else prepare(tensors["token_embd.weight"])
        self._alloc()
        self.plan = self._fused_plan() if fused else None

    def _fused_plan(self):
        """The fused decode step's weight table, or None when an encoding or the kernel path rules it out."""
        if self.arch != "llama":
            return None
        from zoo.kernels import decode as fused

        blocks = [{s: self.lin[f"blk.{i}.{s}.weight"] for s in fused.SLOTS} for i in range(self.n_layers)]
        try:
            plan = fused.plan_llama(blocks, self.head)
        except KernelError:
            return None
        names = [f"blk.{i}.{n}_norm.weight" for i in range(self.n_layers) for n in ("attn", "ffn")]
        self.norm_table = np.stack([self.norms[n] for n in names + ["output_norm.weight"]])  # [2 n_layers + 1, dim]
        self.hid1 = np.zeros(2 * plan.hidden_max, np.float32)  # [2, hidden]: SwiGLU output | up of one token
        self.qkv1 = np.zeros((self.n_heads + 2 * self.n_kv) * self.head_dim, np.float32)  # q | k | v of one token
        self.serial_attention = fused.SERIAL_ATTENTION
        return plan

    @classmethod
    def load(cls, path: str | Path, ctx: int | None = None, chunk: int = 128, fused: bool = True,
             verify: bool = False) -> "Model":
        """Open (headers, mmap), validate every invariant, then build the graph; FormatError on bad files.
        verify=True first checks a directory's files against the card's sha256 (zoo.verify, cached);
        fused=False keeps decode op by op (for comparisons)."""
        t0 = time.perf_counter()
        art = open_artifact(path)
        if verify and Path(path).is_dir():
            from zoo.verify import verify_artifact

            verify_artifact(art)
        art.validate()
        model = cls(Path(path), art.config, art.tensors, ctx=ctx, chunk=chunk, fused=fused)
        model.artifact = art  # keeps the mmaps alive
        model.load_s = time.perf_counter() - t0
        return model

    def _alloc(self) -> None:
        """Activation buffers for up to `chunk` tokens, and the KV cache (zero pages: RSS grows as used)."""
        C, kv_dim, q_dim = self.chunk, self.n_kv * self.head_dim, self.n_heads * self.head_dim
        hmax = max(hidden_dims(self.config))
        f32 = np.float32
        self.x, self.h, self.o = (np.zeros((C, self.dim), f32) for _ in range(3))
        self.att = np.zeros((C, q_dim), f32)
        self.q = np.zeros((C, q_dim), f32)
        self.k, self.v = np.zeros((C, kv_dim), f32), np.zeros((C, kv_dim), f32)
        self.qkv = np.zeros((C, 3 * self.dim), f32) if self.arch == "mpt" else None
        # viewed as [T, hidden_i]; SwiGLU writes act, not gate in place: LLVM vectorizes only non-aliased loops
        self.gate, self.up, self.act = (np.zeros(C * hmax, f32) for _ in range(3))
        self.logits = lazy_zeros((C, self.vocab_size))  # usually only row 0 is written
        shape = (self.n_layers, self.n_kv, self.ctx, self.head_dim)  # head-major, as zoo.kernels.attention wants
        self.k_cache, self.v_cache = lazy_zeros(shape), lazy_zeros(shape)

    def kv_cache_bytes(self, tokens: int | None = None) -> int:
        """Bytes the KV cache holds for `tokens` positions (all of ctx by default)."""
        return 2 * self.n_layers * self.n_kv * self.head_dim * 4 * (self.ctx if tokens is None else tokens)

    def _lin(self, x: np.ndarray | K.Activations, name: str | None, out: np.ndarray, w=None) -> np.ndarray:
        """out [T, rows] = x [T, cols] @ W.T with W encoded (one token runs the matvec kernels); x may be
        K.quantize_input(x) when several linears share it, so the int8 kernels quantize it once."""
        self._linear(x, self.lin[name] if w is None else w, out)
        return out

    def forward(self, ids: list[int], pos: int, all_logits: bool = False) -> np.ndarray:
        """Run tokens `ids` at positions pos.. ; logits of the last token [vocab] (or [T, vocab]).

        The returned array is a buffer reused by the next call: copy it to keep it.
        """
        if pos + len(ids) > self.ctx:
            raise RuntimeModelError(f"context length exceeded: {pos + len(ids)} tokens > {self.ctx}")
        if not ids:
            raise RuntimeModelError("forward needs at least one token")
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise RuntimeModelError(f"token id {bad[0]} is outside the vocabulary (0..{self.vocab_size - 1})")
        if len(ids) == 1 and self.plan is not None and not all_logits:
            return self._decode_fused(ids[0], pos)
        outs = []
        for start in range(0, len(ids), self.chunk):
            last = start + self.chunk >= len(ids)
            logits = self._chunk(ids[start:start + self.chunk], pos + start,
                                 True if all_logits else (False if last else None))
            if all_logits:
                outs.append(logits.copy())
        return np.concatenate(outs) if all_logits else logits[-1]

    def _chunk(self, ids: list[int], pos: int, want_logits: bool | None) -> np.ndarray:
        """One chunk of tokens through all blocks; logits for all (True), the last (False) or none (None)."""
        T = len(ids)
        x = embed_rows(self.w["token_embd.weight"], ids, self.x[:T])
        for layer in range(self.n_layers):
            if self.arch == "llama":
                self._llama_block(layer, x, pos)
            else:
                self._mpt_block(layer, x, pos)
        if want_logits is None:
            return self.logits[:0]
        if not want_logits:  # only the last token's logits: one matvec through the head
            x = x[T - 1:]
        n = x.shape[0]
        norm = K.rmsnorm if self.arch == "llama" else K.layernorm
        h = norm(x, self.norms["output_norm.weight"], self.config["norm_eps"], self.h[:n])
        return self._lin(h, None, self.logits[:n], self.head)

    def _decode_fused(self, token: int, pos: int) -> np.ndarray:
        """One token through the whole model in one numba call; logits [vocab] (a reused buffer)."""
        from zoo.kernels.decode import decode_llama

        x, logits = self.x[0], self.logits[0]
        embed_rows(self.w["token_embd.weight"], [token], self.x[:1])
        decode_llama(self.plan.meta, self.plan.isa, self.norm_table, self.config["norm_eps"], x, self.h[0], self.qkv1,
                     self.att[0], self.hid1, self.k_cache, self.v_cache, pos, self.n_heads, self.head_dim, self.cos,
                     self.sin, self.rope_layout == "interleaved", logits, self.serial_attention)
        return logits

    def _store_kv(self, layer: int, k: np.ndarray, v: np.ndarray, pos: int) -> None:
        """Write the new tokens' k, v [T, n_kv*head_dim] into the head-major caches [n_kv, ctx, head_dim]."""
        T = k.shape[0]
        if T == 1:  # decode: one row per head
            self.k_cache[layer, :, pos] = k.reshape(self.n_kv, self.head_dim)
            self.v_cache[layer, :, pos] = v.reshape(self.n_kv, self.head_dim)
            return
        self.k_cache[layer, :, pos:pos + T] = k.reshape(T, self.n_kv, self.head_dim).transpose(1, 0, 2)
        self.v_cache[layer, :, pos:pos + T] = v.reshape(T, self.n_kv, self.head_dim).transpose(1, 0, 2)

    def _llama_block(self, i: int, x: np.ndarray, pos: int) -> None:
        T, b, eps = x.shape[0], f"blk.{i}.", self.config["norm_eps"]
        h = K.quantize_input(K.rmsnorm(x, self.norms[b + "attn_norm.weight"], eps, self.h[:T]))  # q, k, v share it
        q = self._lin(h, b + "attn_q.weight", self.q[:T]).reshape(T, self.n_heads, self.head_dim)
        k = self._lin(h, b + "attn_k.weight", self.k[:T])
        v = self._lin(h, b + "attn_v.weight", self.v[:T])
        K.rope(q, pos, self.cos, self.sin, self.rope_layout)
        K.rope(k.reshape(T, self.n_kv, self.head_dim), pos, self.cos, self.sin, self.rope_layout)
        self._store_kv(i, k, v, pos)
        att = FA.attention(q, self.k_cache[i], self.v_cache[i], pos + T, self.att[:T].reshape(T, self.n_heads, self.head_dim))
        x += self._lin(att.reshape(T, -1), b + "attn_output.weight", self.o[:T])
        h = K.quantize_input(K.rmsnorm(x, self.norms[b + "ffn_norm.weight"], eps, self.h[:T]))  # gate, up share it
        hidden = self.lin[b + "ffn_up.weight"].rows
        gate = self._lin(h, b + "ffn_gate.weight", self.gate[:T * hidden].reshape(T, hidden))
        up = self._lin(h, b + "ffn_up.weight", self.up[:T * hidden].reshape(T, hidden))
        act = FA.silu_mul(gate, up, self.act[:T * hidden].reshape(T, hidden))
        x += self._lin(act, b + "ffn_down.weight", self.o[:T])

    def _mpt_block(self, i: int, x: np.ndarray, pos: int) -> None:
        T, b, eps, dim = x.shape[0], f"blk.{i}.", self.config["norm_eps"], self.dim
        h = K.layernorm(x, self.norms[b + "attn_norm.weight"], eps, self.h[:T])
        qkv = self._lin(h, b + "attn_qkv.weight", self.qkv[:T])  # [T, 3*dim]: q | k | v
        clip = self.config.get("clip_qkv")
        if clip:
            np.clip(qkv, -clip, clip, out=qkv)
        self._store_kv(i, qkv[:, dim:2 * dim], qkv[:, 2 * dim:], pos)
        q = self.q[:T]
        q[:] = qkv[:, :dim]
        att = FA.attention(q.reshape(T, self.n_heads, self.head_dim), self.k_cache[i], self.v_cache[i], pos + T,
                           self.att[:T].reshape(T, self.n_heads, self.head_dim), alibi_slopes=self.slopes)
        x += self._lin(att.reshape(T, -1), b + "attn_output.weight", self.o[:T])
        h = K.layernorm(x, self.norms[b + "ffn_norm.weight"], eps, self.h[:T])
        hidden = self.lin[b + "ffn_up.weight"].rows
        up = self._lin(h, b + "ffn_up.weight", self.up[:T * hidden].reshape(T, hidden))
        x += self._lin(K.gelu(up, up), b + "ffn_down.weight", self.o[:T])
