"""`-h` is `--help` everywhere, and flags are shown bare in help (no `<bool>` type: they take no value)."""

import subprocess
import sys

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
