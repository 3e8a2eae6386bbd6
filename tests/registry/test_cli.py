"""The package-manager verbs through the real `zoo` command (subprocesses): JSON on stdout, exit codes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from .conftest import assert_same_tree, zoo


@pytest.fixture
def cli_env(zoo_env) -> dict:
    env = dict(os.environ)
    env["ZOO_REGISTRY"] = str(zoo_env / "reg")
    return env


def test_push_pull_list_show_search_rm_gc(cli_env, tiny_artifact, mid_artifact):
    pushed = zoo("push", str(tiny_artifact), "tiny:v1", "--json", env=cli_env)
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["files"] == 3
    again = zoo("push", str(tiny_artifact), "tiny:v1", env=cli_env)  # a retry of the same content: nothing to do
    assert again.returncode == 0 and "nothing uploaded" in again.stderr, again.stderr
    other = zoo("push", str(mid_artifact), "tiny:v1", env=cli_env)
    assert other.returncode == 1 and "already exists" in other.stderr and "Traceback" not in other.stderr
    assert other.stderr.count("\n") == 1

    pulled = zoo("pull", "tiny:v1", "--json", env=cli_env)
    assert pulled.returncode == 0, pulled.stderr
    doc = json.loads(pulled.stdout)
    assert_same_tree(tiny_artifact, Path(doc["path"]))

    listed = json.loads(zoo("list", "--json", env=cli_env).stdout)
    assert [(m["name"], m["tag"]) for m in listed] == [("tiny", "v1")]
    shown = json.loads(zoo("show", "tiny:v1", "--json", env=cli_env).stdout)
    assert shown["source"] == "store" and shown["card"]["architecture"] == "llama"
    table = zoo("show", "tiny:v1", env=cli_env)
    assert table.returncode == 0 and "random/tiny-llama" in table.stdout

    found = json.loads(zoo("search", "--min-sparsity", "0.5", "--bits", "4", "--max-size", "1MB", "--json",
                           env=cli_env).stdout)
    assert [r["name"] for r in found] == ["tiny"]  # the catalog's 7B cards have no measured size
    by_arch = json.loads(zoo("search", "--arch", "mpt", "--json", env=cli_env).stdout)
    assert [r["name"] for r in by_arch] == ["mpt-7b-sparse60-int8"]
    table = zoo("search", "smollm2-135m-instruct", env={**cli_env, "COLUMNS": "200"}).stdout
    assert "ppl/base" in table and "x1.00" in table and "one-shot" in table  # catalog f16: its own base
    machine = re.search(r"^\[1\] tok/s measured on (.+)$", table, re.M)
    assert machine and "vCPU" in machine.group(1) and "[1]" in table.split("\n[1]")[0]

    assert zoo("rm", "tiny:v1", env=cli_env).returncode == 0
    gc = json.loads(zoo("gc", "--json", env=cli_env).stdout)
    assert gc["blobs_removed"] == 3
    assert json.loads(zoo("list", "--json", env=cli_env).stdout) == []


@pytest.mark.parametrize("args, code, message", [
    (("pull", "../evil"), 1, "not a valid model name"),
    (("pull", "missing:v1"), 1, "not found"),
    (("rm", "missing"), 1, "not in the local store"),
    (("search", "--max-size", "lots"), 1, "not a size"),
    (("pull",), 2, "Missing argument"),
    (("push", "/no/such/artifact", "x"), 1, "no such artifact directory or file"),
])
def test_errors_are_one_line_with_exit_codes(cli_env, args, code, message):
    result = zoo(*args, env=cli_env)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_bad_user_config_is_a_clear_error(cli_env, zoo_env):
    config = zoo_env / "config.yaml"
    config.write_text("registry: [not, a, string]\n")
    env = dict(cli_env, ZOO_CONFIG=str(config))
    env.pop("ZOO_REGISTRY")
    result = zoo("pull", "x", env=env)
    assert result.returncode == 1 and "config" in result.stderr and "Traceback" not in result.stderr
