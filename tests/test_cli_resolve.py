"""One resolver for every command that takes a model (zoo/cli/resolve.py), through the real `zoo` command.

Each kind of MODEL argument on a tiny random Llama with a real tokenizer: an artifact directory, a GGUF file and
a Hugging Face checkpoint directory (both written by zoo's exporters, converted on the fly and cached), a stored
NAME[:TAG], a catalog name built from its recipe, and a full http:// registry reference served by nginx. Missing
paths are named as paths, unknown names get "did you mean", and piped stdin joins PROMPT as `ollama run` does.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from zoo.cli.resolve import Checkpoints, resolve_model
from zoo.convert.export_gguf import export_gguf
from zoo.convert.export_hf import export_hf
from zoo.errors import ConvertError
from zoo.registry.transfer import push
from zoo.store import Store


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tiny = _load("zoo_tests_tiny", Path(__file__).parent / "runtime" / "tiny.py")
servers = _load("zoo_tests_servers", Path(__file__).parent / "registry" / "servers.py")
GREEDY = ("--temperature", "0", "-n", "5", "--threads", "1", "--json")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """The same tiny model as a zoo artifact, a GGUF file and a Hugging Face checkpoint directory."""
    root = tmp_path_factory.mktemp("models")
    artifact = tiny.write_tiny(root / "tiny")
    export_gguf(artifact, root / "tiny.gguf")
    export_hf(artifact, root / "tiny-hf")
    return {"artifact": artifact, "gguf": root / "tiny.gguf", "hf": root / "tiny-hf"}


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """A private ZOO_HOME, registry and catalog; no user config."""
    env = {k: v for k, v in os.environ.items() if k not in ("ZOO_REGISTRY", "HF_ENDPOINT", "ZOO_DEBUG")}
    env.update(ZOO_HOME=str(tmp_path / "home"), ZOO_CONFIG=str(tmp_path / "no-config.yaml"),
               ZOO_REGISTRY=str(tmp_path / "registry"), ZOO_CATALOG=str(tmp_path / "catalog"))
    (tmp_path / "catalog").mkdir()
    return env


def zoo(*args, env: dict, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real command; stdin is /dev/null unless text is piped."""
    return subprocess.run([sys.executable, "-P", "-m", "zoo.cli.main", *map(str, args)], env=env, cwd=cwd,
                          input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr
    return proc


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one-line error of a failed command (exit 1, nothing on stdout, no traceback)."""
    assert proc.returncode == 1 and proc.stdout == "" and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoo: error: "), proc.stderr
    return lines[0].removeprefix("zoo: error: ")


def notes(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("zoo: ") and "error" not in line]


def tokens(proc: subprocess.CompletedProcess) -> list[int]:
    return json.loads(ok(proc).stdout)["tokens"]


@pytest.mark.parametrize("kind", ["gguf", "hf"])
def test_a_checkpoint_is_converted_once_then_served_from_the_cache(kind, models, env, tmp_path):
    src = models[kind]
    first = ok(zoo("run", src, "hello world", *GREEDY, env=env))
    [note] = notes(first)
    cached = Path(re.search(r"cached in (\S+)", note)[1])
    assert cached.is_relative_to(Path(env["ZOO_HOME"]) / "converted") and (cached / "zoo.yaml").is_file()
    assert "converted to a zoo artifact" in note and "(to keep one: zoo convert " in note
    stamp = (cached.parent / "source.json").stat().st_mtime_ns

    second = zoo("run", src, "hello world", *GREEDY, env=env)
    assert tokens(second) == tokens(first)
    [note2] = notes(second)
    assert note2.startswith(f"zoo: {src}: using its conversion cached in {cached} ")
    assert (cached.parent / "source.json").stat().st_mtime_ns == stamp  # not converted again

    # the command the note names keeps exactly the model that ran
    keep = shlex.split(note.rsplit("(to keep one: ", 1)[1].rstrip(")"))
    assert keep[:2] == ["zoo", "convert"] and keep[2] == str(src)
    ok(zoo(*keep[1:], env=env, cwd=tmp_path))
    assert tokens(zoo("run", tmp_path / keep[-1], "hello world", *GREEDY, env=env)) == tokens(first)


def test_a_changed_checkpoint_is_converted_again(models, env, tmp_path):
    gguf = tmp_path / "copy.gguf"
    gguf.write_bytes(models["gguf"].read_bytes())
    ok(zoo("bench", gguf, "--json", "--prompt-tokens", "4", "--gen-tokens", "2", "--threads", "1", env=env))
    os.utime(gguf, ns=(gguf.stat().st_atime_ns, gguf.stat().st_mtime_ns + 10**9))
    proc = ok(zoo("bench", gguf, "--json", "--prompt-tokens", "4", "--gen-tokens", "2", "--threads", "1", env=env))
    assert json.loads(proc.stdout)["decode_tps"] > 0
    assert "converted to a zoo artifact" in notes(proc)[0]
    assert len(list((Path(env["ZOO_HOME"]) / "converted").glob("*/copy/zoo.yaml"))) == 1  # replaced, not added
    assert not list((Path(env["ZOO_HOME"]) / "converted").glob(".*partial*"))


def test_eval_reads_a_checkpoint_as_is_and_converts_it_for_the_runtime_engine(models, env):
    args = ("--ctx", "16", "--max-windows", "2", "--json", "--quiet")
    reference = ok(zoo("eval", models["gguf"], *args, env=env))
    assert "reference" in json.loads(reference.stdout)["engine"] and not notes(reference)
    runtime = ok(zoo("eval", models["gguf"], *args, "--engine", "runtime", env=env))
    assert "numba" in json.loads(runtime.stdout)["engine"]
    assert "converted to a zoo artifact" in notes(runtime)[0]


def test_stored_names_with_and_without_tag(models, env):
    store = Store(env["ZOO_HOME"])
    store.add(models["artifact"], "tiny", "latest")
    store.add(models["artifact"], "tiny", "v1")
    want = tokens(zoo("run", models["artifact"], "hello world", *GREEDY, env=env))
    for name in ("tiny", "tiny:latest", "tiny:v1"):
        assert tokens(zoo("run", name, "hello world", *GREEDY, env=env)) == want, name
    assert error_line(zoo("bench", "tyni:v1", env=env)).endswith("did you mean tiny:v1?")
    assert "did you mean tiny" in error_line(zoo("eval", "tin", env=env))


def test_missing_paths_are_named_as_paths_not_as_model_names(models, env):
    store = Store(env["ZOO_HOME"])
    store.add(models["artifact"], "foo", "latest")  # near names exist: still no "did you mean" for a path
    cases = {"./foo.gguf": "./foo.gguf: no such file", "foo.gguf": "foo.gguf: no such file",
             "/nowhere/foo": "/nowhere/foo: no such artifact directory or file",
             "a/b/c/foo": "a/b/c/foo: no such artifact directory or file",
             "~/no-such-dir-for-zoo": "~/no-such-dir-for-zoo: no such artifact directory or file"}
    for arg, message in cases.items():
        assert error_line(zoo("run", arg, "hi", env=env)) == message, arg
    assert error_line(zoo("bench", "./foo.gguf", env=env)) == "./foo.gguf: no such file"
    assert error_line(zoo("eval", "a/b/c/foo", env=env)) == "a/b/c/foo: no such artifact directory or file"
    # 'org/name' may be either: both readings are named
    line = error_line(zoo("run", "org/foo", "hi", env=env))
    assert line.startswith("org/foo: no such artifact directory or file, and org/foo:latest: not found in registry")
    assert not (Path(env["ZOO_HOME"]) / "converted").exists()


def test_a_file_that_is_no_checkpoint_is_refused_in_one_line(env, tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    assert "not a GGUF file" in error_line(zoo("run", tmp_path / "notes.txt", "hi", env=env))
    (tmp_path / "empty").mkdir()
    assert "neither a zoo artifact" in error_line(zoo("bench", tmp_path / "empty", env=env))
    kept = [p.name for p in (Path(env["ZOO_HOME"]) / "converted").iterdir() if p.suffix != ".lock"]
    assert kept == []  # nothing half-written was kept


def test_a_command_that_cannot_convert_names_the_command_to_run(models):
    with pytest.raises(ConvertError, match=rf"not a zoo artifact .*: zoo convert {models['gguf']} -o tiny$"):
        resolve_model(str(models["gguf"]), Checkpoints.REFUSE)
    with pytest.raises(ConvertError, match=rf"zoo convert {models['hf']} -o tiny-hf-zoo$"):
        resolve_model(str(models["hf"]), Checkpoints.REFUSE)
    assert resolve_model(str(models["gguf"]), Checkpoints.READ) == models["gguf"]


@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    server = servers.Nginx(tmp_path_factory.mktemp("mirror"), tmp_path_factory.mktemp("nginx"), rate="10m")
    yield server
    server.stop()


def test_a_registry_reference_is_pulled_or_named_as_missing(models, env, nginx):
    push(models["artifact"], "tiny:v1", registry=str(nginx.root))
    want = tokens(zoo("run", models["artifact"], "hello world", *GREEDY, env=env))
    assert tokens(zoo("run", f"{nginx.url}/tiny:v1", "hello world", *GREEDY, env=env)) == want
    line = error_line(zoo("run", f"{nginx.url}/tiny:v2", "hi", env=env))
    assert line.startswith(f"{nginx.url}/tiny:v2: not found in its registry (") and "did you mean" not in line
    line = error_line(zoo("bench", "ftp://host/tiny:v1", env=env))
    assert line.startswith("ftp://host/tiny:v1: ftp:// is not a registry scheme")


def test_a_catalog_name_is_built_from_its_recipe(models, env, tmp_path):
    card = {"card_version": 1, "name": "tiny-mag50", "architecture": "llama", "license": "apache-2.0",
            "recipe": {"base": {"path": str(models["gguf"]), "sha256": None},
                       "compress": {"method": "magnitude", "sparsity": 0.5,
                                    "samples": 2, "seq_len": 16, "seed": 0}}}
    (tmp_path / "catalog" / "tiny-mag50.yaml").write_text(yaml.safe_dump(card))
    proc = zoo("run", "tiny-mag50", "hello world", *GREEDY, env=env)
    assert len(tokens(proc)) == 5 and "building it from its catalog recipe" in proc.stderr
    assert Store(env["ZOO_HOME"]).has("tiny-mag50", "latest")


def test_piped_stdin_and_a_prompt_are_joined_as_ollama_run_joins_them(models, env):
    """`ollama run`: stdin first, then the prompt arguments, joined by one space (cmd/cmd.go, RunHandler)."""
    art, piped = models["artifact"], "the quick brown fox\n"
    sampled = ("--raw", "--temperature", "1", "--seed", "7", "--top-k", "0", "--top-p", "1", "-n", "8", "--threads",
               "1", "--json")  # sampled, seeded: the answer depends on the whole prompt (greedy answers are all alike)
    joined = json.loads(ok(zoo("run", art, piped + " jumps", *sampled, env=env)).stdout)
    reversed_ = json.loads(ok(zoo("run", art, "jumps " + piped, *sampled, env=env)).stdout)
    assert joined["tokens"] != reversed_["tokens"]  # the order shows in the answer
    got = json.loads(ok(zoo("run", art, "jumps", *sampled, env=env, stdin=piped)).stdout)
    assert (got["tokens"], got["prompt_tokens"]) == (joined["tokens"], joined["prompt_tokens"])
    # empty stdin leaves the prompt as it is; stdin alone is still the whole prompt
    alone = json.loads(ok(zoo("run", art, "jumps", *sampled, env=env)).stdout)
    assert json.loads(ok(zoo("run", art, "jumps", *sampled, env=env, stdin="")).stdout)["tokens"] == alone["tokens"]
    assert tokens(zoo("run", art, *sampled, env=env, stdin=piped)) == tokens(zoo("run", art, piped, *sampled, env=env))
