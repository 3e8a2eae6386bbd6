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


# ---- every other command that takes a model resolves it the same way ------------------------------------------------


def test_show_inspect_verify_and_export_take_names_paths_and_refuse_checkpoints(models, env, tmp_path):
    store = Store(env["ZOO_HOME"])
    store.add(models["artifact"], "tiny", "v1")
    store.add(models["artifact"], "tiny", "latest")
    for name in ("tiny", "tiny:latest", "tiny:v1", str(models["artifact"])):
        assert json.loads(ok(zoo("show", name, "--json", env=env)).stdout)["card"]["architecture"] == "llama", name
        report = json.loads(ok(zoo("inspect", name, "--json", env=env)).stdout)
        assert report["totals"]["parameters"] > 0, name
        assert json.loads(ok(zoo("verify", name, "--json", env=env)).stdout)["ok"] is True, name
    shown = json.loads(ok(zoo("show", models["artifact"], "--json", env=env)).stdout)
    assert shown["source"] == str(models["artifact"]) and shown["tag"] is None
    exported = json.loads(ok(zoo("export", "tiny:v1", "--to", "hf", "-o", tmp_path / "hf", "--json", env=env)).stdout)
    assert exported["path"] == str(tmp_path / "hf") and (tmp_path / "hf" / "config.json").is_file()
    # a checkpoint is refused with the command that converts it; nothing is converted behind the user's back
    for command in (("show",), ("inspect",), ("verify",), ("export", "--to", "hf", "-o", tmp_path / "x")):
        line = error_line(zoo(*command[:1], models["gguf"], *command[1:], env=env))
        assert line == f"{models['gguf']}: not a zoo artifact (no zoo.yaml); convert it first: " \
                       f"zoo convert {models['gguf']} -o tiny", command
    assert not (Path(env["ZOO_HOME"]) / "converted").exists()


def test_every_command_names_missing_paths_as_paths_and_suggests_near_names(models, env, tmp_path):
    Store(env["ZOO_HOME"]).add(models["artifact"], "smol-q8", "v1")
    export = ("--to", "hf", "-o", tmp_path / "x")
    for command, tail in (("show", ()), ("inspect", ()), ("verify", ()), ("export", export),
                          ("compress", ("-o", tmp_path / "y"))):
        assert error_line(zoo(command, "./nope.gguf", *tail, env=env)) == "./nope.gguf: no such file", command
        assert error_line(zoo(command, "/nowhere/x", *tail, env=env)) == \
            "/nowhere/x: no such artifact directory or file", command
        line = error_line(zoo(command, "smol-q8", *tail, env=env))  # stored only as smol-q8:v1
        assert line.endswith("; did you mean smol-q8:v1?"), (command, line)
    # inspect and verify look in the local store only, and say how to get a model that is not there
    assert error_line(zoo("inspect", "smol-q8", env=env)).startswith(
        "smol-q8: not in the local store (`zoo pull smol-q8` fetches it;")
    assert not (Path(env["ZOO_HOME"]) / "converted").exists()


def test_serve_resolves_its_models_before_it_listens(models, env):
    Store(env["ZOO_HOME"]).add(models["artifact"], "smol-q8", "v1")
    proc = zoo("serve", "--models", "smol-q9", "--port", "0", env=env)
    assert error_line(proc).endswith("did you mean smol-q8:v1?")
    assert error_line(zoo("serve", "--models", "./nope.gguf", "--port", "0", env=env)) == "./nope.gguf: no such file"


def test_serve_converts_a_checkpoint_and_serves_it_beside_a_stored_name(models, env):
    import socket
    import time
    import urllib.request

    Store(env["ZOO_HOME"]).add(models["artifact"], "smol-q8", "v1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-P", "-m", "zoo.cli.main", "serve", "--models", str(models["gguf"]),
                               "--models", "smol-q8:v1", "--max-loaded", "2", "--port", str(port), "--threads", "1"],
                              env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    deadline, served = time.monotonic() + 300, None  # a first start compiles the kernels: minutes on a busy CPU
    try:
        while served is None and time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/ps", timeout=5) as answer:
                    served = [m["name"] for m in json.load(answer)["models"]]
            except OSError:
                time.sleep(0.3)
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=60)
    assert served is not None, stderr
    assert sorted(served) == ["smol-q8:v1", "tiny:latest"]
    assert "converted to a zoo artifact" in stderr and "zoo: loaded tiny:latest, smol-q8:v1" in stderr


def test_compress_takes_a_stored_name_and_its_json_is_all_of_stdout(models, env, tmp_path):
    Store(env["ZOO_HOME"]).add(models["artifact"], "tiny", "v1")
    proc = ok(zoo("compress", "tiny:v1", "--output", tmp_path / "out", "--method", "magnitude", "--sparsity", "0.5",
                  "--samples", "2", "--seq-len", "16", "--ctx", "16", "--eval-windows", "2", "--json", env=env))
    assert proc.stdout.count("\n") == 1  # one JSON document, nothing else
    doc = json.loads(proc.stdout)
    assert doc["path"] == str(tmp_path / "out") and doc["card"]["metrics"]["sparsity"] > 0.4
    assert "layer 2/2" in proc.stderr  # progress went to stderr


# ---- catalog builds through run: asked about as `zoo pull` asks, and said honestly ---------------------------------


def _catalog_card(tmp_path: Path, gguf: Path, name: str, build_seconds: float | None = None) -> None:
    """A catalog card with a recipe and no file digests (as the 7B cards), measured at `build_seconds` here."""
    from zoo.build.estimate import machine

    card = {"card_version": 1, "name": name, "architecture": "llama", "license": "apache-2.0",
            "recipe": {"base": {"path": str(gguf), "sha256": None},
                       "compress": {"method": "magnitude", "sparsity": 0.5, "samples": 2, "seq_len": 16, "seed": 0}}}
    if build_seconds is not None:
        card["metrics"] = {"build_seconds": build_seconds, "decode_tps": {"value": 1.0, "machine": machine()}}
    (tmp_path / "catalog" / f"{name}.yaml").write_text(yaml.safe_dump(card))


def test_run_of_a_long_catalog_build_asks_first_as_pull_does(models, env, tmp_path):
    _catalog_card(tmp_path, models["gguf"], "tiny-slow", build_seconds=7200.0)
    proc = zoo("run", "tiny-slow", "hello world", *GREEDY, env=env, stdin="")
    assert proc.returncode == 1 and proc.stdout == "" and "Traceback" not in proc.stderr, proc.stderr
    *said, line = proc.stderr.strip().splitlines()  # what it would build, then the refusal, one line each
    assert said == [line for line in said if "building it from its catalog recipe" in line]
    assert "measured 2.0 h on" in line and line.endswith("stdin is not a terminal: run again with --yes to go ahead")
    assert not Store(env["ZOO_HOME"]).has("tiny-slow", "latest")
    # commands without --yes name the pull that builds it
    proc = zoo("export", "tiny-slow", "--to", "hf", "-o", tmp_path / "x", env=env)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].endswith(
        "build it first with `zoo pull tiny-slow --yes`"), proc.stderr
    assert len(tokens(zoo("run", "tiny-slow", "hello world", *GREEDY, "--yes", env=env))) == 5
    assert Store(env["ZOO_HOME"]).has("tiny-slow", "latest")


def test_run_asks_on_a_terminal_and_a_no_builds_nothing(models, env, tmp_path):
    import pexpect

    _catalog_card(tmp_path, models["gguf"], "tiny-slow", build_seconds=7200.0)
    child = pexpect.spawn(sys.executable, ["-P", "-m", "zoo.cli.main", "run", "tiny-slow", "hi", "-n", "2"], env=env,
                          encoding="utf-8", timeout=120, dimensions=(40, 200))
    child.expect(r"Build tiny-slow\? \[y/N\]")
    child.sendline("n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1 and "tiny-slow: not built (declined)" in child.before
    assert not Store(env["ZOO_HOME"]).has("tiny-slow", "latest")


def test_pull_of_a_card_without_digests_says_what_was_not_checked(models, env, tmp_path):
    _catalog_card(tmp_path, models["gguf"], "tiny-nodigest")
    proc = ok(zoo("pull", "tiny-nodigest", env=env))
    last = proc.stderr.strip().splitlines()[-1]
    assert last == ("built tiny-nodigest:latest from its recipe (UNVERIFIED: the card lists no file digests, so the "
                    "built files were not checked; nor was the base (the recipe pins no sha256))")
    assert "every file matches" not in proc.stderr
    ok(zoo("rm", "tiny-nodigest", env=env))
    doc = json.loads(ok(zoo("pull", "tiny-nodigest", "--json", env=env)).stdout)
    assert doc["built"] is True and doc["verified"] is False and doc["base_verified"] is False


def test_push_and_build_name_what_is_missing(models, env, tmp_path):
    Store(env["ZOO_HOME"]).add(models["artifact"], "smol-q8", "v1")
    assert error_line(zoo("push", models["gguf"], "x:v1", env=env)).endswith(f"zoo convert {models['gguf']} -o tiny")
    assert error_line(zoo("push", "./nope", "x:v1", env=env)) == "./nope: no such artifact directory or file"
    assert error_line(zoo("push", "smol-q9", "x:v1", env=env)).endswith("did you mean smol-q8:v1?")
    _catalog_card(tmp_path, models["gguf"], "tiny-mag50")
    assert error_line(zoo("build", "tiny-mag5", env=env)).endswith("did you mean tiny-mag50?")


def test_sizes_are_said_in_one_unit_system(models, env, tmp_path):
    """Decimal KB/MB/GB everywhere (zoo.card.human_size), as `zoo list`, `zoo search` and the catalog say them."""
    from zoo.card import human_size

    converted = ok(zoo("convert", models["gguf"], "-o", tmp_path / "c", "--encoding", "int8", env=env))
    size = sum(f.stat().st_size for f in (tmp_path / "c").iterdir() if f.name != "zoo.yaml")
    assert f"wrote {tmp_path / 'c'} ({human_size(size)}; tensors: " in converted.stderr and "q8" in converted.stderr
    exported = ok(zoo("export", tmp_path / "c", "--to", "gguf", "-o", tmp_path / "c.gguf", env=env))
    assert f"({human_size((tmp_path / 'c.gguf').stat().st_size)}, f16)" in exported.stderr
    verbose = ok(zoo("run", tmp_path / "c", "hi", "-n", "2", "--threads", "1", "--verbose", env=env))
    assert re.search(r"peak RSS: \d+\.\d MB", verbose.stderr), verbose.stderr
    for proc in (converted, exported, verbose):
        assert "MiB" not in proc.stderr


def test_a_mistyped_registry_directory_is_named_as_missing(models, env, tmp_path):
    push(models["artifact"], "tiny:v1", registry=str(tmp_path / "registry"))
    for command in (("pull", "tiny:v1"), ("show", "tiny:v1"), ("search", "tiny")):
        proc = zoo(*command, "--registry", tmp_path / "registy", env=env)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert f"{tmp_path / 'registy'}: no such registry directory" in proc.stderr
    assert json.loads(ok(zoo("show", "tiny:v1", "--registry", tmp_path / "registry", "--json", env=env)).stdout)[
        "source"] == str(tmp_path / "registry")
