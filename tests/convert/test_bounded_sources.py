"""Hugging Face and compressed-tensors checkpoints come from strangers: every JSON or YAML file zoo convert
parses (config.json, safetensors headers, tokenizer files, README front matter) is read within the readers'
limits, so a deeply nested, huge or duplicate-key file is a one-line ConvertError, never a RecursionError,
a MemoryError or a silently chosen value (issue 18)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zoo.convert import hf_source, open_source
from zoo.convert.ct_config import front_matter_base
from zoo.convert.gguf_vocab import gguf_vocab
from zoo.errors import ConvertError

from .hf_models import save_llama

DEPTH = 100_000  # far past json's and PyYAML's recursion limits
DEEP_JSON = b"[" * DEPTH + b"]" * DEPTH
DEEP_OBJECT = b'{"model_type": "llama", "x": ' + DEEP_JSON + b"}"
CT_CONFIG = {"quant_method": "compressed-tensors", "format": "dense", "config_groups": {}}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A tiny Llama checkpoint (config.json + model.safetensors) as transformers saves it."""
    path = tmp_path_factory.mktemp("bounded") / "llama"
    save_llama(path, vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
               num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    return path


@pytest.fixture
def ckpt(pristine, tmp_path) -> Path:
    """A fresh copy of the checkpoint, safe to damage."""
    return Path(shutil.copytree(pristine, tmp_path / "llama"))


@pytest.fixture
def ct_ckpt(ckpt) -> Path:
    """The checkpoint declared compressed-tensors (dense weights): read by CTSource."""
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**cfg, "quantization_config": CT_CONFIG}))
    return ckpt


def config_with_duplicate(ckpt: Path, key: str, first: object) -> bytes:
    """config.json with `key` given twice: `first`, then the real value (which a plain parser keeps)."""
    text = (ckpt / "config.json").read_text().strip()
    assert text.startswith("{") and f'"{key}"' in text
    return ("{" + json.dumps(key) + ": " + json.dumps(first) + ", " + text[1:]).encode()


def shard(ckpt: Path) -> Path:
    (path,) = ckpt.glob("*.safetensors")
    return path


def replace_header(path: Path, header: bytes) -> None:
    """Swap a safetensors file's header JSON for `header`, keeping its data section."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    path.write_bytes(struct.pack("<Q", len(header)) + header + data[8 + n:])


def refused(path: Path, match: str) -> str:
    started = time.monotonic()
    with pytest.raises(ConvertError, match=match) as err:
        open_source(path)
    assert time.monotonic() - started < 10
    assert "\n" not in str(err.value)
    return str(err.value)


def test_the_pristine_checkpoints_are_accepted(pristine, ct_ckpt):
    assert type(open_source(pristine)).__name__ == "HFSource"
    assert type(open_source(ct_ckpt)).__name__ == "CTSource"


# ---- config.json -------------------------------------------------------------------------------------


def test_deep_config_json(ckpt):
    (ckpt / "config.json").write_bytes(DEEP_OBJECT)
    assert refused(ckpt, "nested deeper than 64 levels").startswith(f"{ckpt / 'config.json'}:")


def test_huge_config_json(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**cfg, "padding": "x" * hf_source.MAX_CONFIG_BYTES}))
    refused(ckpt, f"config.json: larger than the limit of {hf_source.MAX_CONFIG_BYTES} bytes")


def test_duplicate_key_config_json(ckpt):
    (ckpt / "config.json").write_bytes(config_with_duplicate(ckpt, "num_hidden_layers", 40))
    refused(ckpt, "duplicate JSON key 'num_hidden_layers'")


def test_config_json_that_is_not_an_object(ckpt):
    (ckpt / "config.json").write_text("[1, 2]")
    refused(ckpt, "not a JSON object")


def test_compressed_tensors_config_json_duplicate_key(ct_ckpt):
    qc = {**CT_CONFIG, "format": "marlin-24"}
    (ct_ckpt / "config.json").write_bytes(config_with_duplicate(ct_ckpt, "quantization_config", qc))
    refused(ct_ckpt, "duplicate JSON key 'quantization_config'")


def test_compressed_tensors_config_json_deep(ct_ckpt):
    text = (ct_ckpt / "config.json").read_bytes().rstrip()
    (ct_ckpt / "config.json").write_bytes(text[:-1] + b', "x": ' + DEEP_JSON + b"}")
    refused(ct_ckpt, "nested deeper")


# ---- safetensors headers -----------------------------------------------------------------------------


def test_deep_safetensors_header(ckpt):
    replace_header(shard(ckpt), b'{"a": ' + DEEP_JSON + b"}")
    refused(ckpt, "safetensors header: JSON nested deeper")


def test_duplicate_tensor_in_safetensors_header(ckpt):
    path = shard(ckpt)
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    header = json.loads(path.read_bytes()[8:8 + n])
    name, entry = next((k, v) for k, v in header.items() if k != "__metadata__")
    twice = "{" + json.dumps(name) + ": " + json.dumps(entry) + ", " + json.dumps(header)[1:]
    replace_header(path, twice.encode())
    refused(ckpt, f"safetensors header: duplicate JSON key '{name}'")


def test_compressed_tensors_deep_safetensors_header(ct_ckpt):
    replace_header(shard(ct_ckpt), b'{"a": ' + DEEP_JSON + b"}")
    refused(ct_ckpt, "safetensors header: JSON nested deeper")


# ---- tokenizer files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json", "generation_config.json"])
def test_deep_tokenizer_files(ckpt, name):
    (ckpt / name).write_bytes(DEEP_JSON)
    assert refused(ckpt, "nested deeper").startswith(f"{ckpt / name}:")


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json", "generation_config.json"])
def test_duplicate_key_tokenizer_files(ckpt, name):
    (ckpt / name).write_text('{"bos_token_id": 1, "eos_token_id": 2, "bos_token_id": 3}')
    refused(ckpt, "duplicate JSON key 'bos_token_id'")


def test_huge_tokenizer_json(ckpt, monkeypatch):
    monkeypatch.setattr(hf_source, "MAX_TOKENIZER_BYTES", 1 << 20)  # the real limit is 100 MB: same code path
    (ckpt / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {}}, "padding": "x" * (1 << 20)}))
    refused(ckpt, "larger than the limit of 1048576 bytes")


def test_compressed_tensors_deep_tokenizer_json(ct_ckpt):
    (ct_ckpt / "tokenizer.json").write_bytes(DEEP_JSON)
    refused(ct_ckpt, "tokenizer.json: JSON nested deeper")


@pytest.mark.parametrize(("doc", "message"), [(DEEP_JSON, "JSON nested deeper than 64 levels"),
                                              (b'{"model": {"type": "BPE"}, "model": {}}', "duplicate JSON key 'model'"),
                                              (b"[]", "not a JSON object")])
def test_gguf_vocab_refuses_hostile_tokenizer_json(doc, message):
    with pytest.raises(ConvertError, match=f"^tokenizer.json: {message}"):
        gguf_vocab(doc, 64)


# ---- README front matter (the base model of a compressed-tensors checkpoint) ---------------------------


def test_hostile_readme_front_matter_only_loses_the_base_model(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("---\nbase_model: " + "[" * DEPTH + "]" * DEPTH + "\n---\n# a model\n")
    assert front_matter_base(tmp_path) is None
    bomb = "\n".join(["---", "a: &a [x, x, x, x, x, x, x, x, x, x]"]
                     + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(8)]
                     + ["base_model: *i", "---", ""])
    readme.write_text(bomb)  # a billion laughs: 10**9 strings once every alias is expanded
    assert front_matter_base(tmp_path) is None
    readme.write_text("---\nbase_model: org/base\n---\n")
    assert front_matter_base(tmp_path) == "org/base"


# ---- zoo convert: one line, exit 1 -------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["config.json", "tokenizer.json", "header"])
def test_zoo_convert_reports_one_line(ckpt, tmp_path, damage):
    if damage == "header":
        replace_header(shard(ckpt), b'{"a": ' + DEEP_JSON + b"}")
    else:
        (ckpt / damage).write_bytes(DEEP_JSON)
    env = {**os.environ, "ZOO_HOME": str(tmp_path / "home"), "ZOO_DEBUG": "", "ZOO_CONFIG": str(tmp_path / "none.yaml")}
    proc = subprocess.run([sys.executable, "-m", "zoo.cli.main", "convert", str(ckpt), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("zoo: error:") and "nested deeper" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()
