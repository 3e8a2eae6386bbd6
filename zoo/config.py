"""User configuration: where the store lives and which registry bare names come from.

Precedence (first wins): the command line (`--registry`), the environment (`ZOO_HOME`,
`ZOO_REGISTRY`), the config file (`ZOO_CONFIG` or `~/.config/zoo/config.yaml`, keys `home` and
`registry`), then the defaults (platform cache dir; a local registry under it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import platformdirs

from zoo.errors import ConfigError


def config_path() -> Path:
    env = os.environ.get("ZOO_CONFIG")
    return Path(env).expanduser() if env else Path(platformdirs.user_config_dir("zoo")) / "config.yaml"


def load_config() -> dict[str, Any]:
    """The parsed config file (within the readers' YAML limits: size, depth, aliases), or {} when there is none."""
    path = config_path()
    if not path.is_file():
        return {}
    from zoo.untrusted import MAX_YAML_BYTES, load_yaml  # imported here: only when there is a config file

    try:
        with open(path, "rb") as f:
            text = f.read(MAX_YAML_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({type(err).__name__})") from None
    data = load_yaml(text, str(path), ConfigError)
    if data is None:
        return {}
    if not isinstance(data, dict) or any(k not in ("home", "registry") for k in data):
        raise ConfigError(f"{path}: config must be a mapping with keys 'home' and/or 'registry'")
    for key in ("home", "registry"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"{path}: {key!r} must be a string")
    return data


def zoo_home() -> Path:
    """The store root: ZOO_HOME, else config `home`, else the platform's user cache dir."""
    env = os.environ.get("ZOO_HOME")
    if env:
        return Path(env).expanduser()
    home = load_config().get("home")
    return Path(home).expanduser() if home else Path(platformdirs.user_cache_dir("zoo"))


def default_registry(override: str | None = None) -> str:
    """The registry bare names refer to: --registry, ZOO_REGISTRY, config `registry`, else ZOO_HOME/registry."""
    if override:
        return override
    env = os.environ.get("ZOO_REGISTRY")
    if env:
        return env
    return load_config().get("registry") or str(zoo_home() / "registry")
