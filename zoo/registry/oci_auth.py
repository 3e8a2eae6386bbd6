"""Credentials and auth challenges for OCI registries, read the way docker and oras read them.

`docker_credentials(host)`: ZOO_OCI_USERNAME/ZOO_OCI_PASSWORD, else the docker config's `auths`;
`parse_challenge(header)`: a WWW-Authenticate header as (scheme, parameters) for the Bearer/Basic flow.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

from zoo.errors import RegistryError
from zoo.format.envelope import loads_json

MAX_DOCKER_CONFIG_BYTES = 4 << 20  # a docker config holds a few credentials and settings: kilobytes


def docker_credentials(host: str) -> tuple[str, str] | None:
    """(user, password) for `host`: ZOO_OCI_USERNAME/ZOO_OCI_PASSWORD, else an `auths` entry of the docker config."""
    if os.environ.get("ZOO_OCI_USERNAME"):
        return os.environ["ZOO_OCI_USERNAME"], os.environ.get("ZOO_OCI_PASSWORD", "")
    config_dir = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    path = Path(config_dir, "config.json")
    try:
        with open(path, "rb") as f:
            doc = loads_json(f.read(MAX_DOCKER_CONFIG_BYTES + 1), str(path), RegistryError,
                             max_bytes=MAX_DOCKER_CONFIG_BYTES)
    except (OSError, RegistryError):  # no usable docker config (missing, oversized, malformed): anonymous
        return None
    auths = (doc.get("auths") if isinstance(doc, dict) else None) or {}
    wanted = {host, "index.docker.io", "docker.io"} if host in ("registry-1.docker.io", "docker.io") else {host}
    for key, entry in auths.items() if isinstance(auths, dict) else ():
        key_host = re.sub(r"^[a-z]+://", "", key).split("/", 1)[0]
        if key_host not in wanted or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise RegistryError(f"docker config: the 'auth' entry for {key} is not base64 user:password") from None
            return user, password
        if entry.get("username"):
            return entry["username"], entry.get("password", "")
    return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """'Bearer realm="...",service="...",scope="..."' -> ('bearer', {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
