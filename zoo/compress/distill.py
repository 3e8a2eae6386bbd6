"""End-to-end recovery by distillation: the compressed model learns the dense model's next-token distributions.

Block-wise recovery (zoo.compress.recover) matches each block's output in isolation; what a user sees is
the last layer's distribution over the vocabulary, and errors that each block tolerates add up. Here the
whole compressed model (every block's kept weights and group scales, the same masks and fake
quantization as block-wise recovery) trains on the KL divergence from the dense teacher's next-token
distribution at every position of the calibration windows (text plus, with --calib-generated, text
the teacher wrote itself: data-free distillation). Embedding, norms and head stay as compressed.
Teacher and student are both held in memory, so this is for models that fit (SmolLM2, not a 7B on
24 GB; the block-wise mode streams). PyTorch is imported here only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.errors import CompressError
from zoo.format import ArtifactWriter, decode, kept_mask, open_artifact

from .recover import BATCH_WINDOWS, Trainable, batches, held_out, optimizer, require_torch, training_windows
from .windows import compress_threads

# Adam's learning rate in units of each tensor's mean quantization step, as block-wise recovery's STEP_LR; end to end
# every step moves all blocks at once: on SmolLM2 tile4 50%, 16 steps, 0.01 beat 0.003 (docs/compress.md, "distillation")
DISTILL_LR = 0.01
# after block-wise recovery (`--recover both`) 0.01 lowers the training KL but not the held-out one on SmolLM2 sparse50
# and q4; 0.003 lowers both (bench/results/recover.md, sessions 8 and 15)
DISTILL_AFTER_BLOCKWISE_LR = 0.003
BYTES_PER_PARAM = 24  # teacher + student f32, gradient, Adam's two moments, mask and decoded copies
MEMORY_SHARE = 0.7  # of the memory available now, what distillation may plan to use


@dataclass
class DistillReport:
    """KL divergence (nats per token, held-out windows) from the teacher before and after; whether kept."""

    kl_before: float
    kl_after: float
    steps: int
    seconds: float
    replaced: bool

    def card(self) -> dict:
        return {"kl_before": float(f"{self.kl_before:.4g}"), "kl_after": float(f"{self.kl_after:.4g}"),
                "steps": self.steps, "replaced": self.replaced}


def check_memory(parameters: int, windows: int, seq_len: int, vocab: int) -> None:
    """CompressError (one line) when teacher, student, optimizer and a batch's logits would not fit in memory."""
    import psutil

    need = parameters * BYTES_PER_PARAM + 6 * BATCH_WINDOWS * seq_len * vocab * 4
    have = psutil.virtual_memory().available
    if need > MEMORY_SHARE * have:
        raise CompressError(f"--recover distill holds the dense and the compressed model in memory with the optimizer: "
                            f"~{need / 1e9:.1f} GB for this model, {have / 1e9:.1f} GB available; use --recover "
                            "blockwise (it streams one block at a time)")


class _Model:
    """Logits of a Llama/MPT model in torch from a {name: tensor} mapping (a block linear may be a function of its
    input instead: a Trainable's FakeQuantLinear)."""

    def __init__(self, config: dict, seq_len: int):
        from .torch_block import BlockForward

        self.config = config
        self.blocks = [BlockForward(config, i, seq_len) for i in range(config["n_layers"])]

    def __call__(self, torch, w: dict, tokens) -> object:
        from .torch_block import _layer_norm, _rms_norm

        c = self.config
        x = torch.nn.functional.embedding(tokens, w["token_embd.weight"])
        for block in self.blocks:
            x = block(w, x)
        norm = _rms_norm if c["arch"] == "llama" else _layer_norm
        head = w["token_embd.weight"] if c["tied_embeddings"] else w["output.weight"]
        return norm(x, w["output_norm.weight"], c["norm_eps"]) @ head.T


def _kl(torch, student_logits, teacher_logits):
    """Mean over positions of KL(teacher ‖ student) in nats."""
    F = torch.nn.functional
    s = F.log_softmax(student_logits.flatten(0, 1).float(), dim=-1)
    t = F.log_softmax(teacher_logits.flatten(0, 1).float(), dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean")


def distill(source, staged: Path, writer: ArtifactWriter, tokens: np.ndarray, bits: int, budget: int, seed: int,
            pruned: bool, lr: float = DISTILL_LR, progress=None) -> DistillReport:
    """Train the compressed artifact `staged` towards `source` on calibration windows `tokens` [windows, seq_len]
    for `budget` tokens (repeats counted) and write the result (trained, or `staged` as it was if no better on
    the held-out windows) into `writer`, every tensor in the encoding it had. `pruned`: the recipe pruned, so a
    zero of a weight stored without a mask (q4 holding pruned zeros as codes) stays zero. `lr`: Adam's rate in
    mean quantization steps (the recipe's `distill_lr`)."""
    torch = require_torch()
    start = time.monotonic()
    config = source.config
    windows, seq_len = tokens.shape
    check_memory(sum(int(np.prod(source.shape(n))) for n in source.names), windows, seq_len, config["vocab_size"])
    torch.set_num_threads(compress_threads())
    torch.manual_seed(seed * 1_000_003 + 17)
    art = open_artifact(staged)
    teacher = {n: torch.from_numpy(np.array(source.tensor(n), np.float32)) for n in source.names}  # writable copies
    fixed, train = {}, {}
    for name, enc in art.tensors.items():
        dense = decode(enc)
        if name.startswith("blk.") and dense.ndim == 2:
            mask = kept_mask(enc)
            if mask is None and pruned:
                mask = dense != 0
            train[name] = Trainable(torch, enc, mask, dense, bits)
        else:
            fixed[name] = torch.from_numpy(dense)
    model = _Model(config, seq_len)
    held = held_out(windows, seed, config["n_layers"])  # its own draw, not any block's
    fit = training_windows(windows, held)

    def held_kl(weights: dict) -> float:
        total = 0.0
        with torch.no_grad():
            for s in range(0, held.size, BATCH_WINDOWS):
                batch = torch.from_numpy(tokens[held[s:s + BATCH_WINDOWS]])
                total += float(_kl(torch, model(torch, weights, batch), model(torch, teacher, batch))) * batch.shape[0]
        return total / held.size

    before = held_kl({**fixed, **{n: t.weight.detach() for n, t in train.items()}})  # untrained: the decoded weights
    steps = max(1, budget // (BATCH_WINDOWS * seq_len))
    opt, sched = optimizer(torch, train, lr, steps)
    for step, pick in enumerate(batches(fit, steps, np.random.default_rng([seed, 17]))):
        batch = torch.from_numpy(tokens[pick])
        with torch.no_grad():
            target = model(torch, teacher, batch)
        loss = _kl(torch, model(torch, {**fixed, **{n: t.linear for n, t in train.items()}}, batch), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress:
            done = step + 1
            left = (time.monotonic() - start) / done * (steps - done)
            progress(f"distill: step {done}/{steps}, KL {loss.item():.4f} (eta {int(left // 60)}m{int(left % 60):02d}s)")
    trained = {n: t.encoded() for n, t in train.items()}
    after = held_kl({**fixed, **{n: torch.from_numpy(decode(e)) for n, e in trained.items()}})
    replaced = after < before
    for name in sorted(art.tensors):
        writer.add(name, trained[name] if replaced and name in trained else art.tensors[name])
    return DistillReport(before, min(before, after), steps, time.monotonic() - start, replaced)
