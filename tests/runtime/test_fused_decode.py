"""The fused decode step (zoo.kernels.fused through Model.forward) against the op-by-op path, per encoding.

Both paths use the same row kernels and the same int8 activation quantization, so their logits agree to
float rounding; a model whose encodings the fused step does not cover must fall back to op by op.
"""

from __future__ import annotations

import numpy as np
import pytest

import zoo.kernels as K
from zoo.format import ArtifactWriter, encode, expected_tensors
from zoo.runtime.model import Model
from zoo.synthetic import TINY_LLAMA, random_tensor

SLOT_ENCODINGS = {  # a different encoding per weight: q|k|v and gate|up mix kinds inside one fused call
    "attn_q": ("q4", {"group_size": 128, "zeros": True}), "attn_k": ("q8", {"group_size": 64}),
    "attn_v": ("dense", {"dtype": "F16"}), "attn_output": ("dense", {"dtype": "BF16"}),
    "ffn_gate": ("q4", {"group_size": 64}), "ffn_up": ("dense", {"dtype": "F32"}), "ffn_down": ("q8", {"group_size": 32}),
    "output": ("q8", {"group_size": 32}),
}
UNIFORM = {"q4": ("q4", {"group_size": 64}), "q4-g128": ("q4", {"group_size": 128}),
           "q4-g128-zeros": ("q4", {"group_size": 128, "zeros": True}), "q4-zeros": ("q4", {"group_size": 32, "zeros": True}),
           "q8": ("q8", {"group_size": 64}), "f32": ("dense", {"dtype": "F32"}), "f16": ("dense", {"dtype": "F16"}),
           "bf16": ("dense", {"dtype": "BF16"}), "sparse-q4": ("sparse-q4", {"group_size": 64})}
CONFIG = dict(TINY_LLAMA, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=10, tied_embeddings=False)


def _write(path, config: dict, encoding_of) -> str:
    rng = np.random.default_rng(1)
    with ArtifactWriter(path, config) as w:
        for name, shape in expected_tensors(config).items():
            linear = len(shape) == 2 and name != "token_embd.weight"
            enc, kw = encoding_of(name) if linear else ("dense", {"dtype": "F16"})
            w.add(name, encode(random_tensor(rng, name, shape, 0.3 if enc.startswith("sparse") else 0.0), enc, **kw))
        return w.finish({"card_version": 1, "name": "fused-test", "architecture": "llama"})


def _logits(model: Model, prompt: list[int], steps: list[int]) -> np.ndarray:
    """Prefill `prompt`, then decode `steps` one token at a time: [len(steps), vocab]."""
    model.forward(prompt, 0)
    return np.array([model.forward([t], len(prompt) + i).copy() for i, t in enumerate(steps)])


def _compare(path, serial_attention: int | None = None) -> Model:
    fused, plain = Model.load(path), Model.load(path, fused=False)
    if serial_attention is not None and fused.plan is not None:
        fused.serial_attention = serial_attention
    prompt, steps = [1, 5, 9, 2, 7], [3, 11, 0, 23, 6, 6, 14]
    got, want = _logits(fused, prompt, steps), _logits(plain, prompt, steps)
    assert plain.plan is None
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    return fused


@pytest.mark.parametrize("name", ["q4", "q4-g128", "q4-g128-zeros", "q4-zeros", "q8", "f32", "f16", "bf16"])
def test_fused_matches_op_by_op(tmp_path, name):
    model = _compare(_write(tmp_path / "m", CONFIG, lambda n: UNIFORM[name]))
    assert model.plan is not None


@pytest.mark.parametrize("layout, serial_attention", [("half", None), ("interleaved", 0)])
def test_fused_mixed_encodings_and_layouts(tmp_path, layout, serial_attention):
    """Also attention parallel over heads (serial_attention=0) instead of serial (tiny contexts)."""
    config = dict(CONFIG, rope_layout=layout)
    model = _compare(_write(tmp_path / "m", config, lambda n: SLOT_ENCODINGS[n.split(".")[-2]]), serial_attention)
    assert model.plan is not None


def test_fused_avx2_path(tmp_path):
    if "avx2" not in K.available_paths():
        pytest.skip("this CPU has no AVX2")
    before = K.selected_path()
    K.set_path("avx2")
    try:
        model = _compare(_write(tmp_path / "m", CONFIG, lambda n: SLOT_ENCODINGS[n.split(".")[-2]]))
        assert model.plan is not None
    finally:
        K.set_path(before)


def test_unsupported_encodings_fall_back_to_op_by_op(tmp_path):
    model = _compare(_write(tmp_path / "m", CONFIG, lambda n: UNIFORM["sparse-q4"]))
    assert model.plan is None
