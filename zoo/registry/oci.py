"""Any OCI distribution registry (CNCF distribution, zot, Harbor, GHCR, Docker Hub) as a zoo registry.

`oci://HOST[:PORT]/NAMESPACE` holds one repository per model (`NAMESPACE/NAME`), one blob per artifact
file, and an OCI image manifest with the CNCF ModelPack media types; the config blob is a ModelPack model
config that also carries the zoo manifest (files and card). docs/registry.md describes the layout and auth.
The few distribution-API calls are written on httpx directly (docs/registry.md says why not oras-py).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from zoo.errors import ChecksumError, NotFoundError, RegistryError, ZooError

from . import insecure_allowed
from .base import MANIFEST_VERSION, FileEntry, Registry, check_manifest, check_name, check_tag, manifest_bytes
from .fetch import NETWORK_ERRORS, Body, HttpxBody, needs_proxy, open_body, resuming
from .oci_auth import TOKEN_USERNAME, docker_credentials, parse_challenge
from .oci_layout import CARD_FILE, MODEL_CONFIG, OCI_INDEX, OCI_MANIFEST, TITLE, modelpack_config, oci_manifest
from .oci_transport import unreachable, uses_plain_http

DIGEST_TAG = re.compile(r"^sha256-([0-9a-f]{64})$")  # how a @sha256:<hex> reference is carried as a tag
REPO_RE = re.compile(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$")
MAX_SMALL_BLOB = 16 << 20  # config blobs and cards read into memory
MOUNT_SOURCES = 32  # repositories of the namespace asked (HEAD) for a missing blob before uploading it
RETRIES = 3  # re-requests (with Range) of one dropped blob download or chunk upload
SERVER_ERROR_TRIES = 4  # a GET or HEAD answered 5xx is asked this many times in all
SERVER_ERROR_PAUSE = 0.25  # seconds before the first repeat, doubled each time


def parse_oci_ref(ref: str) -> tuple[str, str, str]:
    """'oci://HOST[:PORT]/[NS/]NAME[:TAG|@sha256:HEX]' -> (registry URL, name, tag); a digest becomes 'sha256-HEX'."""
    host, slash, path = ref[len("oci://"):].partition("/")
    if not host or not slash or not path:
        raise RegistryError(f"{ref!r}: expected oci://HOST[:PORT]/REPO[:TAG|@sha256:...]")
    path, at, digest = path.partition("@")
    namespace, _, last = path.rpartition("/")
    if at:
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise RegistryError(f"{ref!r}: a digest reference is @sha256:<64 hex digits>")
        name, tag = last, "sha256-" + digest[len("sha256:"):]
    else:
        name, colon, tag = last.partition(":")
        tag = tag if colon else "latest"
    return f"oci://{host}" + (f"/{namespace}" if namespace else ""), check_name(name), check_tag(tag)


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json(data: bytes, what: str) -> Any:
    """A registry's JSON (manifest, config blob, API answer) parsed within the readers' limits: size,
    depth, no duplicate keys (RegistryError otherwise)."""
    from zoo.untrusted import loads_json

    return loads_json(data, what, RegistryError, max_bytes=MAX_SMALL_BLOB)


def _field(doc: Any, key: str) -> Any:
    """doc[key] when doc is a JSON object, else None."""
    return doc.get(key) if isinstance(doc, dict) else None


def _error_text(status: int, body: bytes) -> str:
    """'HTTP 400 DIGEST_INVALID' from the distribution error body, when there is one."""
    try:
        codes = [_field(e, "code") or "" for e in _field(_json(body, "error"), "errors") or []]
    except (ZooError, TypeError):
        codes = []
    return f"HTTP {status}" + (f" {', '.join(c for c in codes if c)}" if any(codes) else "")


class OciRegistry(Registry):
    """oci://HOST[:PORT][/NAMESPACE]: model NAME lives in repository NAMESPACE/NAME."""

    def __init__(self, url: str, *, insecure: bool | None = None, chunk_size: int = 16 << 20,
                 timeout: float = 60.0) -> None:
        host, _, namespace = url[len("oci://"):].strip("/").partition("/")
        if not host:
            raise RegistryError(f"{url!r}: expected oci://HOST[:PORT][/NAMESPACE]")
        self.url = f"oci://{host}" + (f"/{namespace}" if namespace else "")
        self.api_host = "registry-1.docker.io" if host == "docker.io" else host
        if insecure is None:
            insecure = insecure_allowed()
        self.scheme = "http" if uses_plain_http(host, insecure) else "https"
        self.namespace = namespace
        self.chunk_size = chunk_size  # blobs up to this size go in one PUT, larger ones in PATCH chunks of it
        self.client = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0), follow_redirects=True,
                                   trust_env=True, headers={"User-Agent": "zoo"})
        self.timeout = timeout  # seconds without a byte before a blob body (fetch.py) counts as dropped
        self._credentials: tuple[str, str] | None = None  # read at the first challenge (a helper may run)
        self._credentials_read = False
        self._auth: dict[str, str] = {}  # scope -> Authorization header
        self._sources: list[str] | None = None  # repositories of the namespace, for cross-repository mounts
        self._blob_repos: dict[str, str] = {}  # sha256 -> repository, from the manifests read (read_blob gets no name)
        self._ssl_context: ssl.SSLContext | None = None  # for blob bodies over http.client, made when first needed
        self.stats = {"uploaded_bytes": 0, "uploads": 0, "mounts": 0, "present": 0}

    def close(self) -> None:
        self.client.close()

    # ---- names -----------------------------------------------------------------------------
    def _repo(self, name: str) -> str:
        repo = f"{self.namespace}/{check_name(name)}" if self.namespace else check_name(name)
        if not REPO_RE.match(repo):
            raise RegistryError(f"{repo!r}: OCI repository names are lowercase letters, digits and '._-' separators")
        return repo

    def _api(self, path: str) -> str:
        return f"{self.scheme}://{self.api_host}/v2/{path}"

    # ---- HTTP with the docker/oras auth flow -----------------------------------------------
    def _send(self, method: str, url: str, scope: str, *, what: str, stream: bool = False,
              ok: tuple[int, ...] = (200,), **kwargs) -> httpx.Response:
        """One request through httpx (see _authorized for auth and retries); errors are one line."""
        headers = dict(kwargs.pop("headers", None) or {})

        def attempt(authorization: str | None) -> httpx.Response:
            sent = {**headers, "Authorization": authorization} if authorization else headers
            try:
                return self.client.send(self.client.build_request(method, url, headers=sent, **kwargs), stream=stream)
            except httpx.HTTPError as err:
                raise unreachable(err, self.url, self.scheme, what) from None

        resp = self._authorized(method, scope, attempt)
        if resp.status_code in ok:
            return resp
        try:
            body = resp.read() if stream else resp.content
        except httpx.HTTPError:
            body = b""
        resp.close()
        raise self._refused(resp.status_code, body, what)

    def _authorized(self, method: str, scope: str, attempt: Callable[[str | None], Any]) -> Any:
        """`attempt(authorization)` -> a response (httpx, or fetch.Body); on 401 answer the Bearer or Basic
        challenge once and retry; a GET or HEAD answered with a server error (5xx: docker-registry answers 500
        to a HEAD racing another push of the same blob) is retried with a growing pause, as docker and
        containerd do. Returns the last response, whatever its status."""
        for server_try in range(SERVER_ERROR_TRIES):
            for tried_auth in (False, True):
                resp = attempt(self._auth.get(scope) or self._auth.get("*"))
                if resp.status_code != 401 or tried_auth:
                    break
                challenge = resp.headers.get("WWW-Authenticate", "")
                resp.close()
                self._answer(challenge, scope)
            if resp.status_code < 500 or method not in ("GET", "HEAD") or server_try == SERVER_ERROR_TRIES - 1:
                return resp
            resp.close()
            time.sleep(SERVER_ERROR_PAUSE * 2 ** server_try)
        return resp

    def _refused(self, status: int, body: bytes, what: str) -> RegistryError:
        """The one-line error for a request answered with `status` (not a success)."""
        text = _error_text(status, body)
        if status in (401, 403):
            return RegistryError(f"{self.url}: {what}: access denied ({text}); check ZOO_OCI_USERNAME/"
                                 f"ZOO_OCI_PASSWORD or the docker config's credentials")
        if status == 404:
            return NotFoundError(f"{what}: not found in registry {self.url} ({text})")
        return RegistryError(f"{self.url}: {what}: {text}")

    def _creds(self) -> tuple[str, str] | None:
        """The credentials for this host, read once, when a registry first asks (a credential helper may run)."""
        if not self._credentials_read:
            self._credentials = docker_credentials(self.api_host)
            self._credentials_read = True
        return self._credentials

    def _answer(self, challenge: str, scope: str) -> None:
        """Store the Authorization header a WWW-Authenticate challenge asks for (token or basic)."""
        scheme, params = parse_challenge(challenge)
        creds = self._creds()
        identity = creds[1] if creds and creds[0] == TOKEN_USERNAME else None  # docker's identity (refresh) token
        basic = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode() \
            if creds and identity is None else None
        if scheme == "basic":
            if identity is not None:
                raise RegistryError(f"{self.url}: the registry asks for a user and password (Basic), and the "
                                    f"docker credentials for it are an identity token")
            if basic is None:
                raise RegistryError(f"{self.url}: the registry asks for credentials; set ZOO_OCI_USERNAME/"
                                    f"ZOO_OCI_PASSWORD or log in with docker/oras")
            self._auth["*"] = basic
            return
        if scheme != "bearer" or not params.get("realm"):
            raise RegistryError(f"{self.url}: unsupported auth challenge {scheme or '(none)'!r}")
        scopes = [s for s in (scope or params.get("scope", "")).split(" ") if s]
        try:
            if identity is not None:  # OAuth2 refresh-token grant, as docker does with an identity token
                form = {"grant_type": "refresh_token", "refresh_token": identity, "client_id": "zoo",
                        "scope": " ".join(scopes), **({"service": params["service"]} if params.get("service") else {})}
                resp = self.client.post(params["realm"], data=form)
            else:
                query = [("service", params["service"])] if params.get("service") else []
                resp = self.client.get(params["realm"], params=query + [("scope", s) for s in scopes],
                                       headers={"Authorization": basic} if basic else {})
        except httpx.HTTPError as err:
            raise unreachable(err, self.url, self.scheme, "token service") from None
        if resp.status_code != 200:
            raise RegistryError(f"{self.url}: token service refused the credentials "
                                f"({_error_text(resp.status_code, resp.content)})")
        try:
            answer = _json(resp.content, "token")
            token = _field(answer, "token") or _field(answer, "access_token")
        except RegistryError:
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{self.url}: token service answered without a token")
        self._auth[scope] = f"Bearer {token}"

    # ---- reading ---------------------------------------------------------------------------
    def _get_small_blob(self, repo: str, digest: str, what: str) -> bytes:
        scope = f"repository:{repo}:pull"
        resp = self._send("GET", self._api(f"{repo}/blobs/{digest}"), scope, what=what, stream=True)
        data = bytearray()
        try:
            for chunk in resp.iter_raw():
                data += chunk
                if len(data) > MAX_SMALL_BLOB:
                    raise RegistryError(f"{what}: larger than {MAX_SMALL_BLOB >> 20} MiB; refused")
        except httpx.HTTPError as err:
            raise RegistryError(f"{what}: download interrupted ({type(err).__name__})") from None
        finally:
            resp.close()
        if f"sha256:{_sha256_hex(data)}" != digest:
            raise ChecksumError(f"{what}: blob does not match its digest {digest[:19]}… in {self.url}")
        return bytes(data)

    def _oci_manifest(self, name: str, tag: str) -> tuple[str, dict]:
        repo = self._repo(name)
        digest = DIGEST_TAG.match(tag)
        reference = f"sha256:{digest.group(1)}" if digest else tag
        resp = self._send("GET", self._api(f"{repo}/manifests/{reference}"), f"repository:{repo}:pull",
                          what=f"{name}:{tag}", headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"})
        if digest and _sha256_hex(resp.content) != digest.group(1):
            raise ChecksumError(f"{name}@{reference}: the registry's manifest does not match the digest")
        doc = _json(resp.content, f"{name}:{tag}: the registry's manifest")
        if not isinstance(doc, dict) or doc.get("mediaType") == OCI_INDEX or "manifests" in doc:
            raise NotZooArtifact(f"{name}:{tag}: an image index, not a zoo model manifest")
        if not isinstance(doc.get("layers"), list) or not isinstance(doc.get("config"), dict):
            raise NotZooArtifact(f"{name}:{tag}: not an OCI image manifest with a config and layers")
        return repo, doc

    def get_manifest(self, name: str, tag: str) -> dict:
        """The zoo manifest: from the ModelPack config blob (zoo push), or built from the layers when a layer
        titled zoo.yaml holds the card (oras push of an artifact directory)."""
        repo, doc = self._oci_manifest(name, tag)
        where = f"{self.url}/{name}:{tag}"
        self._blob_repos.update({str(layer.get("digest", ""))[len("sha256:"):]: repo for layer in doc["layers"]
                                 if isinstance(layer, dict)})
        layers = {title: layer for layer in doc["layers"] if isinstance(layer, dict)
                  for title in [_field(layer.get("annotations"), TITLE)] if isinstance(title, str)}
        config = doc["config"]
        if config.get("mediaType") == MODEL_CONFIG:
            what = f"{name}:{tag} config"
            zoo = _field(_json(self._get_small_blob(repo, config.get("digest", ""), what), what), "zoo")
            if isinstance(zoo, dict):
                manifest = zoo
                check_manifest(manifest, where)
                self._check_layers(manifest, layers, where)
                return manifest
        card_layer = layers.get(CARD_FILE)
        if card_layer is None:
            raise NotZooArtifact(f"{where}: not a zoo model (no zoo manifest in its config blob and no layer "
                                 f"titled {CARD_FILE})")
        from zoo.untrusted import load_yaml

        what = f"{name}:{tag} {CARD_FILE}"
        card = load_yaml(self._get_small_blob(repo, card_layer.get("digest", ""), what),
                         f"{where}: its {CARD_FILE} layer", RegistryError)
        files = [{"path": title, "size": layer.get("size"), "sha256": str(layer.get("digest", ""))[len("sha256:"):]}
                 for title, layer in layers.items() if title]
        manifest = {"manifest_version": MANIFEST_VERSION, "name": name, "tag": tag,
                    "files": sorted(files, key=lambda f: f["path"]), "card": card}
        check_manifest(manifest, where)
        listed = {(f.get("path"), f.get("sha256")) for f in card.get("files") or [] if isinstance(f, dict)}
        if not listed <= {(f["path"], f["sha256"]) for f in files}:
            raise ChecksumError(f"{where}: the layers do not match the files {CARD_FILE} lists")
        return manifest

    @staticmethod
    def _check_layers(manifest: dict, layers: dict, where: str) -> None:
        for f in manifest["files"]:
            layer = layers.get(f["path"])
            if layer is None or layer.get("digest") != f"sha256:{f['sha256']}" or layer.get("size") != f["size"]:
                raise ChecksumError(f"{where}: {f['path']}: the OCI layers do not match the zoo manifest")

    def read_blob(self, entry: FileEntry, offset: int = 0) -> tuple[int, Iterator[bytes]]:
        """Stream a blob in 1 MiB pieces (fetch.py; httpx only through a proxy); a dropped connection is asked
        again from where it broke (Range), up to RETRIES times."""
        repo = self._blob_repos.get(entry.sha256)
        if repo is None:
            raise NotFoundError(f"{entry.path}: sha256:{entry.sha256[:12]} is in no manifest read from {self.url}")
        url = self._api(f"{repo}/blobs/sha256:{entry.sha256}")
        scope = f"repository:{repo}:pull"
        open_at = self._open_through_proxy if needs_proxy(url) else self._open_direct

        def reopen(pos: int) -> tuple[Body | HttpxBody, int]:
            resp = open_at(url, scope, entry.path, {"Range": f"bytes={pos}-"} if pos else {})
            return resp, pos if resp.status_code == 206 else 0

        first, start = reopen(offset)
        return start, resuming(first, start, entry.size, reopen, entry.path, RETRIES)

    def _open_direct(self, url: str, scope: str, what: str, headers: dict[str, str]) -> Body:
        """GET a blob body over http.client (fetch.open_body), with _send's auth flow and retries."""
        if self._ssl_context is None and self.scheme == "https":
            self._ssl_context = httpx.create_ssl_context(trust_env=True)  # the trust httpx gives the other calls

        def attempt(authorization: str | None) -> Body:
            try:
                return open_body(url, headers, authorization=authorization, timeout=self.timeout,
                                 ssl_context=self._ssl_context)
            except NETWORK_ERRORS as err:
                raise unreachable(err, self.url, self.scheme, what) from None

        body = self._authorized("GET", scope, attempt)
        if body.status_code in (200, 206):
            return body
        text = body.read_small()
        body.close()
        raise self._refused(body.status_code, text, what)

    def _open_through_proxy(self, url: str, scope: str, what: str, headers: dict[str, str]) -> HttpxBody:
        """The same GET through httpx, which speaks the proxy the environment names; its body read as a Body."""
        resp = self._send("GET", url, scope, what=what, stream=True, ok=(200, 206),
                          headers={"Accept-Encoding": "identity", **headers})
        return HttpxBody(resp)

    def list_manifests(self) -> list[tuple[str, str]]:
        out = []
        for repo in self._catalog():
            name = repo[len(self.namespace) + 1:] if self.namespace else repo
            try:
                check_name(name)
                resp = self._send("GET", self._api(f"{repo}/tags/list"), f"repository:{repo}:pull", what=repo)
            except (NotFoundError, RegistryError):
                continue
            tags = _field(_json(resp.content, f"{repo} tags"), "tags")
            for tag in tags if isinstance(tags, list) else []:
                if isinstance(tag, str) and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", tag):
                    out.append((name, tag))
        return sorted(out)

    def list_cards(self) -> Iterator[tuple[str, str, dict]]:
        for name, tag in self.list_manifests():
            try:
                yield name, tag, self.get_manifest(name, tag)["card"]
            except NotZooArtifact:
                continue  # an image or another tool's artifact in the same namespace

    def _catalog(self) -> list[str]:
        """Repositories under the namespace, through /v2/_catalog (paginated by Link headers)."""
        repos, url = [], self._api("_catalog?n=1000")
        prefix = f"{self.namespace}/" if self.namespace else ""
        while url:
            resp = self._send("GET", url, "registry:catalog:*", what="the catalog (/v2/_catalog)")
            found = _field(_json(resp.content, "the catalog"), "repositories")
            if isinstance(found, list):
                repos += [r for r in found if isinstance(r, str) and r.startswith(prefix)]
            link = re.match(r'<([^>]+)>;\s*rel="?next"?', resp.headers.get("Link", ""))
            url = urljoin(url, link.group(1)) if link else None
        return repos

    # ---- writing: blobs first (HEAD, mount, upload), the manifest last ---------------------
    def push(self, name: str, tag: str, manifest: dict, artifact: Path, progress=None) -> None:
        self._current_name = name
        self._sources = None
        super().push(name, tag, manifest, artifact, progress)

    def _blob_exists(self, repo: str, digest: str) -> bool:
        try:
            self._send("HEAD", self._api(f"{repo}/blobs/{digest}"), f"repository:{repo}:pull", what=digest)
        except NotFoundError:
            return False
        return True

    def has_blob(self, entry: FileEntry) -> bool:
        present = self._blob_exists(self._repo(self._current_name), f"sha256:{entry.sha256}")
        self.stats["present"] += present
        return present

    def _start_upload(self, repo: str, digest: str) -> str | None:
        """POST an upload; with a mount source that has the blob, ask to mount it (None = mounted)."""
        if self._sources is None:
            try:
                self._sources = [r for r in self._catalog() if r != repo][:MOUNT_SOURCES]
            except RegistryError:
                self._sources = []  # no catalog: no mount candidates, plain uploads
        source = next((r for r in self._sources if self._blob_exists(r, digest)), None)
        scope = f"repository:{repo}:pull,push" + (f" repository:{source}:pull" if source else "")
        params = {"mount": digest, "from": source} if source else {}
        resp = self._send("POST", self._api(f"{repo}/blobs/uploads/"), scope, what=f"upload of {digest[:19]}",
                          ok=(201, 202), params=params)
        if resp.status_code == 201:
            self.stats["mounts"] += 1
            return None
        return urljoin(str(resp.url), resp.headers["Location"])

    def _upload(self, repo: str, digest: str, size: int, read) -> None:
        """Monolithic PUT up to chunk_size, PATCH chunks beyond (a dropped chunk resumes from the registry's Range)."""
        location = self._start_upload(repo, digest)
        if location is None:
            return
        scope, pos, tries = f"repository:{repo}:pull,push", 0, 0
        what = f"upload of {digest[:19]}"
        if size > self.chunk_size:
            while pos < size:
                data = read(pos, min(self.chunk_size, size - pos))
                try:
                    resp = self._send("PATCH", location, scope, what=what, ok=(202,), content=data, headers={
                        "Content-Type": "application/octet-stream", "Content-Range": f"{pos}-{pos + len(data) - 1}"})
                    pos += len(data)
                except RegistryError:
                    tries += 1
                    if tries > RETRIES:
                        raise
                    time.sleep(0.2 * 2 ** tries)
                    location, pos = self._resume_upload(repo, digest, location, scope, what)
                    if location is None:
                        return
                    continue
                location = urljoin(location, resp.headers["Location"])
            body = b""
        else:
            body = read(0, size)
        url = str(httpx.URL(location).copy_merge_params({"digest": digest}))  # keep the upload's _state query
        self._send("PUT", url, scope, what=what, ok=(201,), content=body,
                   headers={"Content-Type": "application/octet-stream"})
        self.stats["uploads"] += 1
        self.stats["uploaded_bytes"] += size

    def _resume_upload(self, repo: str, digest: str, location: str, scope: str, what: str) -> tuple[str | None, int]:
        """Where an interrupted chunked upload goes on: the registry's Range for it (GET status), or, when the
        registry refuses that (distribution 2.8 does after a broken PATCH), a new session from byte 0."""
        try:
            resp = self._send("GET", location, scope, what=what, ok=(204,))
            end = int(resp.headers.get("Range", "0--1").rpartition("-")[2])
            return urljoin(location, resp.headers["Location"]), end + 1
        except (RegistryError, ValueError, KeyError):
            return self._start_upload(repo, digest), 0

    def put_blob(self, entry: FileEntry, source: Path) -> None:
        with open(source, "rb") as f:
            self._upload(self._repo(self._current_name), f"sha256:{entry.sha256}", entry.size,
                         lambda pos, n: os.pread(f.fileno(), n, pos))

    def put_manifest(self, name: str, tag: str, manifest: dict) -> None:
        """Upload the config blob (ModelPack config + zoo manifest), then PUT the OCI manifest under the tag."""
        if DIGEST_TAG.match(tag):
            raise RegistryError(f"{name}: push to a tag, not to a digest reference")
        repo, entries = self._repo(name), check_manifest(manifest)
        config = modelpack_config(manifest, entries)
        config_digest = f"sha256:{_sha256_hex(config)}"
        if not self._blob_exists(repo, config_digest):
            self._upload(repo, config_digest, len(config), lambda pos, n: config[pos:pos + n])
        body = manifest_bytes(oci_manifest(manifest, entries, config_digest, len(config)))
        resp = self._send("PUT", self._api(f"{repo}/manifests/{tag}"), f"repository:{repo}:pull,push",
                          what=f"manifest {name}:{tag}", ok=(201,), content=body,
                          headers={"Content-Type": OCI_MANIFEST})
        stored = resp.headers.get("Docker-Content-Digest")
        if stored and stored != f"sha256:{_sha256_hex(body)}":
            raise ChecksumError(f"{name}:{tag}: the registry stored the manifest as {stored}, not as sent")

    def delete_manifest(self, name: str, tag: str) -> None:
        repo, _ = self._oci_manifest(name, tag)
        head = self._send("HEAD", self._api(f"{repo}/manifests/{tag}"), f"repository:{repo}:pull",
                          what=f"{name}:{tag}", headers={"Accept": OCI_MANIFEST})
        self._send("DELETE", self._api(f"{repo}/manifests/{head.headers['Docker-Content-Digest']}"),
                   f"repository:{repo}:delete", what=f"deleting {name}:{tag}", ok=(202,))

    _current_name = ""  # the model being pushed: has_blob/put_blob take only a FileEntry


class NotZooArtifact(RegistryError):
    """The reference names an OCI manifest that holds no zoo model (an image, another tool's artifact)."""
