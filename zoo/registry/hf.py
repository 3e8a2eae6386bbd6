"""The Hugging Face Hub (or a Hub-compatible server) as a registry: one repo per model, revision as tag.

Push: one atomic commit (huggingface_hub's create_commit) of every artifact file plus a README.md
whose front matter is the card's Hub metadata; a tag other than `main` becomes a git tag. Xet is
turned off for endpoints other than huggingface.co (self-hosted servers cannot take Xet uploads).
Pull: the manifest is built from the repo's zoo.yaml (its `files` list carries every other file's
size and sha256); files are fetched with our own ranged GETs on `/resolve/`, because the hub client
does not resume a download across processes. Tokens come from huggingface_hub (HF_TOKEN or the
saved login) and never appear in errors.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx

from zoo import card as cards
from zoo.errors import CardError, NotFoundError, RegistryError

from .base import MANIFEST_VERSION, FileEntry, Registry, check_manifest
from .http import redact

CARD_FILE = "zoo.yaml"
README = "README.md"
HUB_HOSTS = ("huggingface.co", "hf.co")


class HfRegistry(Registry):
    """hf://org/repo[@revision] against `endpoint` (default: HF_ENDPOINT, else huggingface.co)."""

    def __init__(self, endpoint: str | None = None, token: str | None = None, namespace: str | None = None) -> None:
        from huggingface_hub import HfApi, constants

        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
        if urlsplit(self.endpoint).hostname not in HUB_HOSTS:
            constants.HF_HUB_DISABLE_XET = True  # read at call time by the upload code
        self.token = token
        self.api = HfApi(endpoint=self.endpoint, token=token)
        self.namespace = namespace  # hf://org as a registry: the org's zoo models are listed and searched
        self.url = f"hf://{namespace or ''} at {redact(self.endpoint)}"
        self.client = httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=True)
        self._where: dict[str, tuple[str, str, str]] = {}  # sha256 -> (repo, revision, path)

    def close(self) -> None:
        self.client.close()

    def _headers(self) -> dict[str, str]:
        from huggingface_hub.utils import build_hf_headers

        return build_hf_headers(token=self.token, library_name="zoo")

    def _resolve_url(self, repo: str, revision: str, path: str) -> str:
        return f"{self.endpoint}/{repo}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def _check_status(self, resp: httpx.Response, what: str) -> None:
        if resp.status_code == 404:
            raise NotFoundError(f"{what}: not found at {redact(self.endpoint)}")
        if resp.status_code in (401, 403):
            raise RegistryError(f"{what}: access denied by {redact(self.endpoint)} (HTTP {resp.status_code}; "
                                f"set HF_TOKEN or log in)")
        if resp.status_code not in (200, 206):
            raise RegistryError(f"{what}: {redact(self.endpoint)} answered HTTP {resp.status_code}")

    def list_manifests(self) -> list[tuple[str, str]]:
        """(repo, "main") for the namespace's models tagged `zoo` (what `zoo push` writes into README.md)."""
        if not self.namespace:
            raise RegistryError("name a Hub namespace to list or search: --registry hf://<org or user>")
        from huggingface_hub.errors import HfHubHTTPError

        try:
            return sorted((m.id, "main") for m in self.api.list_models(author=self.namespace, filter="zoo"))
        except HfHubHTTPError as err:
            status = getattr(getattr(err, "response", None), "status_code", "?")
            raise RegistryError(f"hf://{self.namespace}: the Hub refused to list models (HTTP {status})") from None
        except (httpx.HTTPError, OSError) as err:
            raise RegistryError(f"hf://{self.namespace}: cannot reach {redact(self.endpoint)} "
                                f"({type(err).__name__})") from None

    def list_cards(self) -> Iterator[tuple[str, str, dict]]:
        """(repo, "main", card) for the namespace's zoo models; repos without a readable zoo.yaml are skipped."""
        for name, tag in self.list_manifests():
            try:
                yield name, tag, self.get_manifest(name, tag)["card"]
            except (NotFoundError, RegistryError):
                continue

    def get_manifest(self, name: str, tag: str) -> dict:
        what = f"hf://{name}@{tag}"
        try:
            resp = self.client.get(self._resolve_url(name, tag, CARD_FILE), headers=self._headers())
        except httpx.HTTPError as err:
            raise RegistryError(f"{what}: cannot reach {redact(self.endpoint)} ({type(err).__name__})") from None
        self._check_status(resp, f"{what}/{CARD_FILE}")
        data = resp.content
        try:
            card = cards.parse(data, source=f"{what}/{CARD_FILE}")
        except CardError as err:
            raise RegistryError(str(err)) from None
        files = [dict(f) for f in card.get("files") or []]
        if not files:
            raise RegistryError(f"{what}/{CARD_FILE}: lists no files; not a zoo artifact")
        files.append({"path": CARD_FILE, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        manifest = {"manifest_version": MANIFEST_VERSION, "name": name, "tag": tag,
                    "files": sorted(files, key=lambda f: f["path"]), "card": card}
        for entry in check_manifest(manifest, what):
            self._where[entry.sha256] = (name, tag, entry.path)
        return manifest

    def read_blob(self, entry: FileEntry, offset: int = 0) -> tuple[int, Iterator[bytes]]:
        if entry.sha256 not in self._where:
            raise RegistryError(f"{entry.path}: read the manifest before its files")
        repo, revision, path = self._where[entry.sha256]
        headers = self._headers()
        if offset:
            headers["Range"] = f"bytes={offset}-"
        request = self.client.build_request("GET", self._resolve_url(repo, revision, path), headers=headers)
        try:
            resp = self.client.send(request, stream=True)
        except httpx.HTTPError as err:
            raise RegistryError(f"{entry.path}: cannot download ({type(err).__name__})") from None
        try:
            self._check_status(resp, f"hf://{repo}@{revision}/{path}")
        except RegistryError:
            resp.close()
            raise
        start = offset if resp.status_code == 206 else 0  # a server without Range support restarts the file

        def chunks() -> Iterator[bytes]:
            try:
                yield from resp.iter_bytes()
            except httpx.HTTPError as err:
                raise RegistryError(f"{entry.path}: download interrupted ({type(err).__name__}); "
                                    f"pull again to resume") from None
            finally:
                resp.close()

        return start, chunks()

    def push(self, name: str, tag: str, manifest: dict, artifact: Path, progress=None) -> None:
        """One commit with every file and the README; then the tag. The commit is atomic on the Hub."""
        from huggingface_hub import CommitOperationAdd
        from huggingface_hub.errors import HfHubHTTPError
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()  # zoo shows its own progress on stderr
        entries = check_manifest(manifest)
        ops = [CommitOperationAdd(path_in_repo=e.path, path_or_fileobj=str(artifact / e.path)) for e in entries]
        if README not in {e.path for e in entries}:
            ops.append(CommitOperationAdd(path_in_repo=README,
                                          path_or_fileobj=cards.to_hf_readme(manifest["card"]).encode()))
        try:
            self.api.create_repo(name, repo_type="model", exist_ok=True)
            commit = self.api.create_commit(name, operations=ops, revision="main",
                                            commit_message=f"zoo push {name}:{tag}")
            if tag != "main":
                try:
                    self.api.delete_tag(name, tag=tag)
                except HfHubHTTPError as err:
                    if getattr(err.response, "status_code", None) != 404:
                        raise
                self.api.create_tag(name, tag=tag, revision=commit.oid)
        except HfHubHTTPError as err:
            status = getattr(getattr(err, "response", None), "status_code", "?")
            raise RegistryError(f"hf://{name}@{tag}: the Hub refused the push (HTTP {status})") from None
        except (OSError, ValueError, RuntimeError) as err:
            raise RegistryError(f"hf://{name}@{tag}: push failed ({type(err).__name__})") from None
        if progress:
            progress(sum(e.size for e in entries))
