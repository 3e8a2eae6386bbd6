"""Several sequences through one Model at once: each has its own KV cache (a slot); one decode step runs
every sequence's current token together.

`BatchRunner.decode(tokens, positions, slots)` puts the B tokens through every block as a [B, dim]
matrix, so each linear layer is one `zoo.kernels.linear` call on B rows (its matmul path: every weight
is read once per step for all sequences); RoPE, the KV write and attention run per sequence, at its own
position, on its own slot (Llama: one `batch_attention` call a block for all of them). Prefill of a new sequence is `Model.forward` on that sequence's slot.

Greedy answers equal the one-sequence answers token for token only where the matmul kernels reproduce
the one-token kernels' numbers (q4 with group 128 on AVX-512 quantizes activations to int8 as the matvec
does); elsewhere a near-tie can flip a token, as it already does between Model's fused and op-by-op decode
(docs/serve.md). `zoo serve --batch 1` runs one sequence at a time: exactly `zoo run`'s numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

import zoo.kernels as K
from zoo.errors import RuntimeModelError
from zoo.kernels.decode import batch_attention

from .embedding import embed_rows
from .model import Model, lazy_zeros


@dataclass
class KVSlot:
    """One sequence's KV cache: k, v float32 [n_layers, n_kv, ctx, head_dim] (pages committed as written)."""

    index: int
    k: np.ndarray
    v: np.ndarray


class BatchRunner:
    """Prefill and batched decode over up to `max_batch` KV slots of one Model."""

    def __init__(self, model: Model, max_batch: int) -> None:
        if not 1 <= max_batch <= model.chunk:
            raise RuntimeModelError(f"batch size must be between 1 and {model.chunk}, got {max_batch}")
        self.model, self.max_batch = model, max_batch
        # every slot's cache in one array (zero pages cost no RSS until written), so one kernel call reaches all
        # of a step's sequences: [max_batch, n_layers, n_kv, ctx, head_dim]
        self.k_all = lazy_zeros((max_batch, *model.k_cache.shape))
        self.v_all = lazy_zeros((max_batch, *model.v_cache.shape))
        self._slots = [KVSlot(i, self.k_all[i], self.v_all[i]) for i in range(max_batch)]
        self._free = list(reversed(self._slots))  # pop() hands out slot 0 first

    # ---- slots -------------------------------------------------------------------------------
    def acquire(self) -> KVSlot | None:
        """A free slot, or None when max_batch sequences already run."""
        return self._free.pop() if self._free else None

    def release(self, slot: KVSlot) -> None:
        """Give a slot back (its stale contents are never read: attention stops at a sequence's length)."""
        self._free.append(slot)

    @property
    def free_slots(self) -> int:
        return len(self._free)

    @contextlib.contextmanager
    def _on(self, slot: KVSlot) -> Iterator[Model]:
        """The Model with `slot` as its KV cache for the duration (its forward reads self.k_cache)."""
        m = self.model
        saved = m.k_cache, m.v_cache
        m.k_cache, m.v_cache = slot.k, slot.v
        try:
            yield m
        finally:
            m.k_cache, m.v_cache = saved

    # ---- forward -----------------------------------------------------------------------------
    def prefill(self, ids: list[int], pos: int, slot: KVSlot) -> np.ndarray:
        """Run one sequence's tokens at pos.. on its slot; logits of the last token [vocab] (a reused buffer)."""
        with self._on(slot) as m:
            return m.forward(ids, pos)

    def decode(self, tokens: list[int], positions: list[int], slots: list[KVSlot]) -> np.ndarray:
        """One step of B sequences: token b at positions[b] on slots[b]; logits [B, vocab] (a reused buffer).

        One sequence takes the Model's single-token path (the fused decode step), so a lone stream runs as
        fast as `zoo run`; two or more run as one [B, dim] matrix through the batched kernels.
        """
        m, B = self.model, len(tokens)
        if not 1 <= B <= self.max_batch or len(positions) != B or len(slots) != B:
            raise RuntimeModelError(f"decode: {B} tokens, {len(positions)} positions, {len(slots)} slots "
                                    f"(at most {self.max_batch})")
        for t, p in zip(tokens, positions):
            if not 0 <= t < m.vocab_size:
                raise RuntimeModelError(f"token id {t} is outside the vocabulary (0..{m.vocab_size - 1})")
            if not 0 <= p < m.ctx:
                raise RuntimeModelError(f"context length exceeded: position {p} >= {m.ctx}")
        if B == 1:
            with self._on(slots[0]):
                return m.forward(tokens, positions[0])[None, :]
        x = embed_rows(m.w["token_embd.weight"], tokens, m.x[:B])  # [B, dim]
        pos_ids = np.array(positions, np.int64), np.array([slot.index for slot in slots], np.int64)
        for layer in range(m.n_layers):
            if m.arch == "llama":
                self._llama_block(layer, x, *pos_ids)
            else:
                self._mpt_block(layer, x, positions, slots)
        norm = K.rmsnorm if m.arch == "llama" else K.layernorm
        h = norm(x, m.norms["output_norm.weight"], m.config["norm_eps"], m.h[:B])
        return m._lin(h, None, m.logits[:B], m.head)  # [B, vocab]

    def _attend(self, layer: int, q: np.ndarray, k: np.ndarray, v: np.ndarray, positions: list[int],
                slots: list[KVSlot], out: np.ndarray) -> None:
        """Per sequence b: store k[b], v[b] [n_kv*head_dim] at its position in its slot, then attend with
        q[b] [n_heads, head_dim] over its own positions 0..pos into out[b]."""
        m = self.model
        for b, (pos, slot) in enumerate(zip(positions, slots)):
            slot.k[layer, :, pos] = k[b].reshape(m.n_kv, m.head_dim)
            slot.v[layer, :, pos] = v[b].reshape(m.n_kv, m.head_dim)
            K.attention(q[b:b + 1], slot.k[layer], slot.v[layer], pos + 1, out[b:b + 1], alibi_slopes=m.slopes)

    def _llama_block(self, i: int, x: np.ndarray, positions: np.ndarray, slot_ids: np.ndarray) -> None:
        """Block i on x [B, dim] in place; sequence b at positions[b] on slot slot_ids[b] (int64 arrays)."""
        m, B, b, eps = self.model, x.shape[0], f"blk.{i}.", self.model.config["norm_eps"]
        h = K.quantize_input(K.rmsnorm(x, m.norms[b + "attn_norm.weight"], eps, m.h[:B]))  # q, k, v share it
        q = m._lin(h, b + "attn_q.weight", m.q[:B])  # [B, n_heads*head_dim]
        k = m._lin(h, b + "attn_k.weight", m.k[:B])  # [B, n_kv*head_dim]
        v = m._lin(h, b + "attn_v.weight", m.v[:B])
        att = m.att[:B]
        batch_attention(q, k, v, positions, slot_ids, i, self.k_all, self.v_all, m.cos, m.sin,
                        m.rope_layout == "interleaved", att)  # RoPE, KV writes and attention of every sequence
        x += m._lin(att, b + "attn_output.weight", m.o[:B])
        h = K.quantize_input(K.rmsnorm(x, m.norms[b + "ffn_norm.weight"], eps, m.h[:B]))  # gate, up share it
        hidden = m.lin[b + "ffn_up.weight"].rows
        gate = m._lin(h, b + "ffn_gate.weight", m.gate[:B * hidden].reshape(B, hidden))
        up = m._lin(h, b + "ffn_up.weight", m.up[:B * hidden].reshape(B, hidden))
        act = K.silu_mul(gate, up, m.act[:B * hidden].reshape(B, hidden))
        x += m._lin(act, b + "ffn_down.weight", m.o[:B])

    def _mpt_block(self, i: int, x: np.ndarray, positions: list[int], slots: list[KVSlot]) -> None:
        m, B, b, dim = self.model, x.shape[0], f"blk.{i}.", self.model.dim
        h = K.layernorm(x, m.norms[b + "attn_norm.weight"], m.config["norm_eps"], m.h[:B])
        qkv = m._lin(h, b + "attn_qkv.weight", m.qkv[:B])  # [B, 3*dim]: q | k | v
        clip = m.config.get("clip_qkv")
        if clip:
            np.clip(qkv, -clip, clip, out=qkv)
        q = m.q[:B]
        q[:] = qkv[:, :dim]
        att = m.att[:B].reshape(B, m.n_heads, m.head_dim)
        self._attend(i, q.reshape(B, m.n_heads, m.head_dim), qkv[:, dim:2 * dim], qkv[:, 2 * dim:], positions,
                     slots, att)
        x += m._lin(att.reshape(B, -1), b + "attn_output.weight", m.o[:B])
        h = K.layernorm(x, m.norms[b + "ffn_norm.weight"], m.config["norm_eps"], m.h[:B])
        hidden = m.lin[b + "ffn_up.weight"].rows
        up = m._lin(h, b + "ffn_up.weight", m.up[:B * hidden].reshape(B, hidden))
        x += m._lin(K.gelu(up, up), b + "ffn_down.weight", m.o[:B])

