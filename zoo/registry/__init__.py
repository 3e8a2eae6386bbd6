"""zoo.registry: where models live (local directory, S3, Hugging Face Hub, static HTTP mirror, OCI registry).

`open_registry(url)` picks the backend from the URL; `parse_ref(ref)` splits a model reference
into (registry URL or None, name, tag). Backends are imported lazily so `zoo list` never loads s3fs.
`insecure_registries()` is the CLI's `--insecure`: registries named by host may then use plain HTTP.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from zoo.errors import RegistryError

from .base import DEFAULT_TAG, FileEntry, Registry, check_name, check_tag, split_name

__all__ = ["DEFAULT_TAG", "FileEntry", "Ref", "Registry", "insecure_allowed", "insecure_registries", "open_registry",
           "parse_ref"]

_INSECURE: ContextVar[bool] = ContextVar("zoo_registry_insecure", default=False)


@contextmanager
def insecure_registries(allowed: bool = True) -> Iterator[None]:
    """Within the block, registries opened by host (oci://) may be reached over plain HTTP (`--insecure`)."""
    token = _INSECURE.set(allowed or _INSECURE.get())
    try:
        yield
    finally:
        _INSECURE.reset(token)


def insecure_allowed() -> bool:
    """Plain HTTP to any registry host: inside insecure_registries(), or with ZOO_OCI_INSECURE=1."""
    return _INSECURE.get() or os.environ.get("ZOO_OCI_INSECURE", "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Ref:
    """A parsed model reference: registry URL (None = the default registry), name, tag."""

    registry: str | None
    name: str
    tag: str

    @property
    def store_name(self) -> str:
        """The name a pulled copy gets in the local store (the Hub keeps org/repo)."""
        return self.name


def parse_ref(ref: str) -> Ref:
    """'name[:tag]', 's3://bucket/prefix/name[:tag]', 'http(s)://host/path/name[:tag]', 'hf://org/repo[@rev]'."""
    if not isinstance(ref, str) or not ref:
        raise RegistryError("empty model reference")
    if ref.startswith("oci://"):
        from .oci import parse_oci_ref

        return Ref(*parse_oci_ref(ref))
    if ref.startswith("hf://"):
        repo, _, rev = ref[len("hf://"):].partition("@")
        if repo.count("/") != 1:
            raise RegistryError(f"{ref!r}: a Hub reference is hf://org/repo[@revision]")
        return Ref("hf://", check_name(repo), check_tag(rev or "main"))
    for scheme in ("s3://", "http://", "https://"):
        if ref.startswith(scheme):
            base, slash, last = ref[len(scheme):].rstrip("/").rpartition("/")
            if not slash or not base:
                raise RegistryError(f"{ref!r}: expected {scheme}<location>/<name>[:tag]")
            name, tag = split_name(last)
            return Ref(scheme + base, name, tag)
    name, tag = split_name(ref)
    return Ref(None, name, tag)


def open_registry(url: str) -> Registry:
    """The backend for a registry URL: s3://bucket/prefix, http(s)://..., hf:// (HF_ENDPOINT), or a path."""
    if url.startswith("s3://"):
        from .s3 import S3Registry

        return S3Registry(url)
    if url.startswith(("http://", "https://")):
        from .http import HttpRegistry

        return HttpRegistry(url)
    if url.startswith("oci://"):
        from .oci import OciRegistry

        return OciRegistry(url)
    if url.startswith("hf://"):
        from .hf import HfRegistry

        namespace = url[len("hf://"):].strip("/")
        if namespace and ("/" in namespace or "@" in namespace):
            raise RegistryError(f"{url!r}: as a registry, the Hub is hf:// or hf://<org or user>")
        return HfRegistry(os.environ.get("HF_ENDPOINT") or None, namespace=namespace or None)
    if "://" in url and not url.startswith("file://"):
        raise RegistryError(f"{url!r}: unknown registry scheme (use a path, s3://, http(s)://, hf://, oci://)")
    from .local import LocalRegistry

    return LocalRegistry(url[len("file://"):] if url.startswith("file://") else url)
