"""`-h` is `--help` everywhere, and flags are shown bare in help (no `<bool>` type: they take no value)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from zoo.cli.main import app

COMMANDS = sorted(typer.main.get_command(app).commands)


def zoo(*args):
    return subprocess.run([sys.executable, "-m", "zoo.cli.main", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_top_level_help(flag):
    proc = zoo(flag)
    assert proc.returncode == 0, proc.stderr
    assert "Usage:" in proc.stdout and "pull" in proc.stdout and "<bool>" not in proc.stdout


def test_rm_and_run_help_show_flags_without_a_type():
    rm_help, run_help = zoo("rm", "--help"), zoo("run", "-h")
    assert rm_help.returncode == 0 and run_help.returncode == 0, rm_help.stderr + run_help.stderr
    for text in (rm_help.stdout, run_help.stdout):
        assert "<bool>" not in text and "--json" in text
    assert "--prune" in rm_help.stdout
    threads = next(line for line in run_help.stdout.splitlines() if "--threads" in line)
    assert "<int range>" in threads  # an option that takes a value keeps its type


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_takes_dash_h(command):
    result = CliRunner().invoke(app, [command, "-h"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"Usage: zoo {command}" in result.output and "--help" in result.output
    assert "<bool>" not in result.output


def test_dash_h_is_not_taken_by_an_option():
    """No command uses -h for something else (it would shadow help, as -t once meant two things)."""
    for name, command in typer.main.get_command(app).commands.items():
        owners = [p.name for p in command.params if "-h" in getattr(p, "opts", [])]
        assert owners == [], f"zoo {name}: -h belongs to {owners}"


def test_old_option_spellings_still_work_but_help_shows_one_name_per_concept():
    """-o/--output everywhere (compress, sweep and tune said --out); -t is --tag (build), not run's temperature."""
    runner = CliRunner()
    for command in ("compress", "sweep", "tune"):
        shown = runner.invoke(app, [command, "-h"], terminal_width=200).output
        assert "--output" in shown and "--out " not in shown and "--out," not in shown, command
    # the hidden alias reaches the same option: its check refuses a path under a file, naming --output
    proc = zoo("compress", "model.gguf", "--out", f"{__file__}/sub")
    assert proc.returncode == 2 and "'--output'" in proc.stderr and "is a file" in proc.stderr, proc.stderr
    run_help = runner.invoke(app, ["run", "-h"], terminal_width=200).output
    assert not any(line.split()[1:3] == ["--temperature", "-t"] for line in run_help.splitlines() if "│" in line)
    assert "-t" in next(line for line in runner.invoke(app, ["build", "-h"], terminal_width=200).output.splitlines()
                        if "--tag" in line)
    proc = zoo("run", "some-model", "hi", "-t", "-1")  # run's old -t is still its temperature
    assert proc.returncode == 2 and "'--temperature'" in proc.stderr and "greater than or equal to 0" in proc.stderr


def test_int4_and_int8_are_hidden_aliases_of_the_q4_and_q8_encodings():
    from zoo.cli.options import encoding

    assert [encoding(e) for e in ("int4", "INT8", "sparse-int4", "sparse-int8", "q4", "auto")] == \
        ["q4", "q8", "sparse-q4", "sparse-q8", "q4", "auto"]
    shown = CliRunner().invoke(app, ["convert", "-h"], terminal_width=200).output
    assert "q4" in shown and "int4" not in shown.split("Examples")[1].split("Options")[1]


def test_shell_completion_is_on_and_completes_commands_and_model_names(tmp_path):
    from zoo.store import Store
    from zoo.synthetic import TINY_LLAMA, write_random_model

    script = Path(sys.executable).with_name("zoo")  # completion runs the installed console script, as shells do
    assert script.is_file(), "the `zoo` console script is not installed (pip install -e .)"
    env = {**os.environ, "ZOO_HOME": str(tmp_path / "home"), "ZOO_CONFIG": str(tmp_path / "none.yaml"),
           "ZOO_CATALOG": str(tmp_path / "catalog")}
    Store(env["ZOO_HOME"]).add(write_random_model(tmp_path / "m", TINY_LLAMA, encoding="q8"), "smol-q8", "v1")

    def complete(line: str) -> list[str]:
        words = line.split(" ")
        proc = subprocess.run([str(script)], env={**env, "_ZOO_COMPLETE": "complete_bash", "COMP_WORDS": line,
                                                  "COMP_CWORD": str(len(words) - 1)},
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    assert sorted(complete("zoo pu")) == ["pull", "push"]
    assert complete("zoo run sm") == ["smol-q8:v1"] and complete("zoo rm other smo") == ["smol-q8:v1"]
    assert "complete -o default -F _zoo_completion zoo" in subprocess.run(
        [str(script), "--show-completion", "bash"], env=env, capture_output=True, text=True, timeout=60).stdout


def test_top_level_help_groups_the_verbs_everyday_ones_first():
    shown = zoo("--help").stdout
    panels = [line.strip("╭─ ").split(" ─")[0] for line in shown.splitlines() if line.startswith("╭─")]
    assert panels == ["Options", "Models", "Make and measure", "Files"]
    models = shown.split("Models")[1].split("╰")[0]
    verbs = [m[1] for m in re.finditer(r"^│ (\w+) ", models, re.MULTILINE)]  # a row's first line names its verb
    assert verbs[:3] == ["run", "pull", "push"] and "serve" in verbs and "compress" not in verbs
    assert "--install-completion" in shown
