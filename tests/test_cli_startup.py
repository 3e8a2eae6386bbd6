"""Start-up of the everyday verbs: `zoo pull` and friends load only what they use (issue 19: a pull's wall time
from a fast registry is mostly interpreter start-up). Each case runs the real command in a fresh interpreter
and reads the modules it had loaded when it exited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.registry.transfer import push
from zoo.synthetic import TINY_LLAMA, write_random_model

# Run the console entry point as `zoo` does; at exit, write the names of the loaded modules to the file argv[1].
RUN_AND_LIST_MODULES = """
import atexit, json, sys
out, sys.argv = sys.argv[1], ["zoo", *sys.argv[2:]]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
from zoo.cli.main import main
main()
"""

# Not needed to pull from a directory registry, nor to print help: compute kernels, the build and runtime
# packages, card schema validation, and the other registries' client libraries.
NOT_FOR_A_PULL = ("numba", "zoo.kernels", "zoo.runtime", "zoo.build", "zoo.compress", "zoo.convert", "jsonschema",
                  "httpx", "s3fs", "huggingface_hub", "tokenizers", "safetensors", "torch")


def loaded(tmp_path: Path, env: dict, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `zoo ARGS` in a fresh interpreter (stdin, stdout and stderr not terminals): the process and the
    top-level packages and zoo modules it loaded."""
    out = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-P", "-c", RUN_AND_LIST_MODULES, str(out), *args], env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    names = set(json.loads(out.read_text()))
    return proc, {name.split(".")[0] for name in names} | {name for name in names if name.startswith("zoo.")}


def heavy(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(p for p in packages if p in modules)


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    """A directory registry holding tiny:v1 (a ~20 KB sparse-q4 Llama)."""
    root = tmp_path_factory.mktemp("startup")
    artifact = write_random_model(root / "tiny", TINY_LLAMA, encoding="sparse-q4", sparsity=0.5, group_size=64,
                                  seed=1)
    push(str(artifact), "tiny:v1", registry=str(root / "reg"))
    return root / "reg"


@pytest.fixture
def env(tmp_path) -> dict:
    """An empty ZOO_HOME; no registry, catalog or config from the user."""
    env = {k: v for k, v in os.environ.items() if k not in ("ZOO_REGISTRY", "ZOO_CATALOG", "HF_ENDPOINT")}
    env.update(ZOO_HOME=str(tmp_path / "home"), ZOO_CONFIG=str(tmp_path / "no-config.yaml"))
    return env


@pytest.mark.parametrize("args", [["--help"], ["pull", "--help"], ["push", "--help"], ["list", "--help"]])
def test_help_loads_no_numpy_nor_heavy_packages(tmp_path, env, args):
    proc, modules = loaded(tmp_path, env, *args)
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout
    assert heavy(modules, ("numpy", "yaml", "zoo.format", "zoo.store", "filelock") + NOT_FOR_A_PULL) == []


def test_pull_loads_only_what_a_pull_needs(tmp_path, env, registry):
    """A real pull from a directory registry, its progress not on a terminal: no compute, build or runtime
    code, no other registry's client, and no rich (bars are drawn only on a terminal)."""
    proc, modules = loaded(tmp_path, env, "pull", "tiny:v1", "--registry", str(registry))
    assert proc.returncode == 0, proc.stderr
    assert "pulled tiny:v1" in proc.stderr
    assert (Path(env["ZOO_HOME"]) / "manifests" / "tiny" / "v1.json").is_file()
    assert heavy(modules, ("rich",) + NOT_FOR_A_PULL) == []


def test_pull_loads_no_numpy(tmp_path, env, registry):
    proc, modules = loaded(tmp_path, env, "pull", "tiny:v1", "--registry", str(registry))
    assert proc.returncode == 0, proc.stderr
    assert heavy(modules, ("numpy",)) == []  # the manifest's JSON goes through zoo.format.envelope, numpy-free
