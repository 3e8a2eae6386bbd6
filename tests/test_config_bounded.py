"""The user config (ZOO_CONFIG or ~/.config/zoo/config.yaml) is parsed within the readers' YAML limits: a deep,
huge or alias-bomb file is a one-line ConfigError, never a RecursionError or a hang (issue 18)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from zoo.config import load_config
from zoo.errors import ConfigError
from zoo.untrusted import MAX_YAML_BYTES

DEEP = "home: " + "[" * 100_000 + "]" * 100_000 + "\n"
BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x, x]"]
                 + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(8)]
                 + ["home: *i", ""])


@pytest.fixture
def config(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    monkeypatch.setenv("ZOO_CONFIG", str(path))
    return path


def test_plain_config_is_read(config, tmp_path):
    config.write_text(f"home: {tmp_path / 'store'}\n")
    assert load_config() == {"home": str(tmp_path / "store")}


@pytest.mark.parametrize(("text", "message"), [(DEEP, "nested deeper than 64 levels"),
                                               (BOMB, "nodes with its aliases expanded"),
                                               ("# pad\n" * (MAX_YAML_BYTES // 6 + 1) + "home: /x\n", "exceed the limit"),
                                               ("home: [unclosed\n", "not valid YAML")])
def test_hostile_config_is_a_config_error(config, text, message):
    config.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config()
    assert str(err.value).startswith(f"{config}:") and "\n" not in str(err.value)


def test_cli_reports_a_deep_config_on_one_line(config, tmp_path):
    config.write_text(DEEP)
    env = {**os.environ, "ZOO_CONFIG": str(config), "ZOO_DEBUG": ""}
    env.pop("ZOO_HOME", None)
    env.pop("ZOO_REGISTRY", None)
    proc = subprocess.run([sys.executable, "-m", "zoo.cli.main", "list"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("zoo: error:") and "nested deeper" in lines[0], proc.stderr
