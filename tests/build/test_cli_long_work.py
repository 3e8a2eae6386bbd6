"""Long work on the command line: `zoo build` and `zoo pull`'s build fallback say the cost first, ask above the
threshold (on a terminal, through a pseudo-terminal here), refuse in one line with piped stdin, go ahead with
--yes, show a layer bar on a terminal, and end naming name:tag. A tiny real card, built for real."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from zoo.build.estimate import machine
from zoo.cli.long_work import parse_step
from zoo.store import Store

from .test_build import make_card, save

NAME = "tiny-wanda50-int4"


def measured(card: dict, seconds: float) -> dict:
    """The card as if its build had taken `seconds` on this kind of machine."""
    return {**card, "metrics": {"build_seconds": seconds, "decode_tps": {"value": 1.0, "machine": machine()}}}


def zoo(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """zoo with piped stdin (the environment is the test's: ZOO_HOME and ZOO_CATALOG from zoo_env)."""
    return subprocess.run([sys.executable, "-m", "zoo.cli.main", *args], input=stdin, capture_output=True,
                          text=True, env=dict(os.environ))


@pytest.fixture
def slow_card(zoo_env, tiny_gguf, tmp_path) -> Path:
    """A card whose build was measured at two hours here: over the threshold."""
    return save(measured(make_card(tmp_path, {"path": str(tiny_gguf)}), 7200.0), tmp_path / "card.yaml")


def test_piped_stdin_refuses_long_work_in_one_line_and_yes_builds(slow_card, zoo_env):
    proc = zoo("build", str(slow_card))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "measured 2.0 h on" in proc.stderr and "run again with --yes" in proc.stderr
    assert "Traceback" not in proc.stderr and not Store().has(NAME, "latest")
    proc = zoo("build", str(slow_card), "--yes")
    assert proc.returncode == 0, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"built {NAME}:latest (") and "every file matches" in last
    assert str(zoo_env) not in last  # the model's name, not a snapshot path
    assert "measured 2.0 h on" in proc.stderr  # the estimate is still said
    assert "layer 2/2" in proc.stderr  # stderr is not a terminal: plain step lines
    assert Store().has(NAME, "latest")


def test_short_work_goes_ahead_with_piped_stdin_and_says_its_cost(zoo_env, tiny_gguf, tmp_path):
    path = save(measured(make_card(tmp_path, {"path": str(tiny_gguf)}), 5.0), tmp_path / "card.yaml")
    proc = zoo("build", str(path), "--tag", "v1")
    assert proc.returncode == 0, proc.stderr
    assert f"building {NAME}: nothing to download (the base is here); measured 5 s on {machine()}" in proc.stderr
    quiet = zoo("build", str(path), "--tag", "v2", "--json")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert json.loads(quiet.stdout)["tag"] == "v2"


def test_a_terminal_is_asked_and_shown_a_layer_bar(slow_card, zoo_env):
    def spawn() -> pexpect.spawn:
        return pexpect.spawn(sys.executable, ["-m", "zoo.cli.main", "build", str(slow_card)], env=dict(os.environ),
                             encoding="utf-8", timeout=120, dimensions=(40, 200))

    child = spawn()
    child.expect_exact(f"Build {NAME}? [y/N]")
    assert "measured 2.0 h on" in child.before
    child.sendline("n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1 and "not built (declined)" in child.before
    assert not Store().has(NAME, "latest")
    child = spawn()
    child.expect_exact(f"Build {NAME}? [y/N]")
    child.sendline("y")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", child.before)  # the bar's cursor moves and erases
    assert "2/2" in screen and "layer 2/2" not in screen  # the bar, not plain step lines
    assert screen.strip().splitlines()[-1].startswith(f"built {NAME}:latest (")


def test_pull_of_a_long_catalog_build_refuses_then_builds_with_yes(zoo_env, tiny_gguf, tmp_path):
    card = measured(make_card(tmp_path, {"path": str(tiny_gguf)}), 3600.0)
    save(card, zoo_env / "catalog" / f"{NAME}.yaml")
    proc = zoo("pull", NAME)
    refusal = [line for line in proc.stderr.splitlines() if "--yes" in line]
    assert proc.returncode == 1 and len(refusal) == 1 and "measured 60 min on" in refusal[0], proc.stderr
    assert "building it from its recipe failed" not in proc.stderr  # declining is not a failed build
    assert not Store().has(NAME, "latest")
    proc = zoo("pull", NAME, "--yes")
    assert proc.returncode == 0, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"built {NAME}:latest from its recipe (every file matches the card's sha256)"


def test_pull_that_builds_on_a_terminal_shows_layers_not_an_empty_byte_bar(zoo_env, tiny_gguf, tmp_path):
    save(measured(make_card(tmp_path, {"path": str(tiny_gguf)}), 5.0), zoo_env / "catalog" / f"{NAME}.yaml")
    child = pexpect.spawn(sys.executable, ["-m", "zoo.cli.main", "pull", NAME], env=dict(os.environ),
                          encoding="utf-8", timeout=120, dimensions=(40, 200))
    child.expect(pexpect.EOF)
    child.close()
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", child.before)
    assert child.exitstatus == 0, screen
    assert "2/2" in screen and "bytes" not in screen and f"pull {NAME}" not in screen  # no `0/? bytes` bar
    assert screen.strip().splitlines()[-1] == f"built {NAME}:latest from its recipe (every file matches the card's sha256)"


def test_compress_on_a_terminal_shows_a_layer_bar(tiny_gguf, tmp_path):
    child = pexpect.spawn(sys.executable, ["-m", "zoo.cli.main", "compress", str(tiny_gguf), "-o", str(tmp_path / "o"),
                                           "--method", "wanda", "--sparsity", "0.5", "--samples", "4", "--seq-len",
                                           "32", "--no-eval"], env=dict(os.environ), encoding="utf-8", timeout=120,
                          dimensions=(40, 200))
    child.expect(pexpect.EOF)
    child.close()
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", child.before)
    assert child.exitstatus == 0, screen
    assert "2/2" in screen and "layer 2/2" not in screen and "sparsity 0.500" in screen
    assert screen.strip().splitlines()[-1].startswith(f"wrote {tmp_path / 'o'}:")


@pytest.mark.parametrize("message, step", [
    ("layer 3/30: sparsity 0.500, 4.50 bits/weight (eta 1m02s)", ("layer", 3, 30, "sparsity 0.500, 4.50 bits/weight")),
    ("owl: layer 2/30 outliers [0.1] (eta 0m05s)", ("owl: layer", 2, 30, "outliers [0.1]")),
    ("distill: step 5/100, KL 0.1234 (eta 1m00s)", ("distill: step", 5, 100, "KL 0.1234")),
    ("eval window 7/64 (eta 5s)", ("eval window", 7, 64, "")),
    ("base: tiny.gguf", None),
    ("sweep point sparsity 0.5, 4 bits -> out", None),
])
def test_progress_messages_become_steps(message, step):
    got = parse_step(message)
    assert (got and (got.phase, got.done, got.total, got.detail)) == step
