"""Credentials and auth challenges for OCI registries, read the way docker and oras read them.

`docker_credentials(host)`: ZOO_OCI_USERNAME/ZOO_OCI_PASSWORD, else the docker config: the host's
`credHelpers` entry, else `credsStore`, else its `auths` entry; (TOKEN_USERNAME, token) is an identity token.
`parse_challenge(header)`: a WWW-Authenticate header as (scheme, parameters) for the Bearer/Basic flow.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

from zoo.errors import RegistryError
from zoo.untrusted import loads_json

from .oci_credhelper import TOKEN_USERNAME, helper_credentials

MAX_DOCKER_CONFIG_BYTES = 4 << 20  # a docker config holds a few credentials and settings: kilobytes
HUB_HOSTS = ("registry-1.docker.io", "docker.io", "index.docker.io")
HUB_SERVER = "https://index.docker.io/v1/"  # the server address docker files Docker Hub's credentials under

__all__ = ["TOKEN_USERNAME", "docker_credentials", "parse_challenge"]


def _docker_config() -> dict | None:
    """$DOCKER_CONFIG/config.json or ~/.docker/config.json; None when missing, oversized or malformed."""
    config_dir = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    path = Path(config_dir, "config.json")
    try:
        with open(path, "rb") as f:
            doc = loads_json(f.read(MAX_DOCKER_CONFIG_BYTES + 1), str(path), RegistryError,
                             max_bytes=MAX_DOCKER_CONFIG_BYTES)
    except (OSError, RegistryError):  # no usable docker config: anonymous
        return None
    return doc if isinstance(doc, dict) else None


def _entry_for(table: object, wanted: set[str]) -> tuple[str, object] | None:
    """(key, value) of a docker config table (`auths`, `credHelpers`) whose key names one of the hosts."""
    for key, value in table.items() if isinstance(table, dict) else ():
        if re.sub(r"^[a-z]+://", "", key).split("/", 1)[0] in wanted:
            return key, value
    return None


def docker_credentials(host: str) -> tuple[str, str] | None:
    """(user, secret) for `host`: ZOO_OCI_USERNAME/ZOO_OCI_PASSWORD, else the docker config as docker reads
    it (a helper for the host, else the default store, else `auths`). A user of TOKEN_USERNAME means the
    secret is an identity token (for the token service), not a password."""
    if os.environ.get("ZOO_OCI_USERNAME"):
        return os.environ["ZOO_OCI_USERNAME"], os.environ.get("ZOO_OCI_PASSWORD", "")
    doc = _docker_config()
    if doc is None:
        return None
    hub = host in HUB_HOSTS
    wanted = set(HUB_HOSTS) if hub else {host}
    helper = _entry_for(doc.get("credHelpers"), wanted)
    store = helper[1] if helper else doc.get("credsStore")
    if store:
        return helper_credentials(store, HUB_SERVER if hub else host)
    found = _entry_for(doc.get("auths"), wanted)
    entry = found[1] if found else None
    if not isinstance(entry, dict):
        return None
    if entry.get("identitytoken"):
        return TOKEN_USERNAME, str(entry["identitytoken"])
    if entry.get("auth"):
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise RegistryError(f"docker config: the 'auth' entry for {found[0]} is not base64 user:password") from None
        return user, password
    if entry.get("username"):
        return entry["username"], entry.get("password", "")
    return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """'Bearer realm="...",service="...",scope="..."' -> ('bearer', {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
