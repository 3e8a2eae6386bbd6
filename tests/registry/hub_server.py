"""A small Hub-API server for tests: the upload half of the Hugging Face Hub protocol, over git.

It implements what huggingface_hub's HfApi calls for a push without Xet: create_repo, the
preupload check, the LFS batch API and basic PUT uploads (sha256-checked), the NDJSON commit
endpoint, create/delete tag, `/resolve/` downloads with Range, and the model listing
(`/api/models?author=&filter=`, matched on README front-matter tags and library_name). Each repo is a real git
repository at `<root>/models/<org>/<repo>`; LFS content is committed as plain file content, which
is the layout olah's offline mirror mode serves. It is test scaffolding, not part of zoo.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin")


def _git(repo: Path, *args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], input=data, capture_output=True, check=True).stdout


class HubServer:
    """Start with HubServer(root, token); .url is the endpoint; .stop() shuts it down."""

    def __init__(self, root: Path, token: str | None = None) -> None:
        self.root = root
        self.token = token
        self.lfs = root / ".lfs"
        self.lfs.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.requests: list[str] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def repo_dir(self, repo_id: str) -> Path:
        org, name = repo_id.split("/")
        return self.root / "models" / org / name

    def list_models(self, author: str | None, filters: list[str]) -> list[dict]:
        """Repos of `author` whose README front matter has every filter as a tag or as its library_name."""
        out = []
        orgs = [self.root / "models" / author] if author else sorted((self.root / "models").glob("*"))
        for repo in sorted(p for org in orgs if org.is_dir() for p in org.iterdir()):
            try:
                readme = _git(repo, "show", "HEAD:README.md").decode()
                front = yaml.safe_load(readme.split("---\n")[1]) or {}
            except (subprocess.CalledProcessError, IndexError, yaml.YAMLError):
                front = {}
            labels = set(front.get("tags") or []) | {front.get("library_name")}
            if all(f in labels for f in filters):
                repo_id = f"{repo.parent.name}/{repo.name}"
                out.append({"id": repo_id, "modelId": repo_id, "tags": sorted(t for t in labels if t),
                            "library_name": front.get("library_name")})
        return out

    def _create(self, repo_id: str) -> None:
        path = self.repo_dir(repo_id)
        if not (path / ".git").exists():
            path.mkdir(parents=True, exist_ok=True)
            _git(path, "init", "-q", "-b", "main")
            _git(path, "config", "user.email", "hub@test")
            _git(path, "config", "user.name", "hub")
            _git(path, "commit", "-q", "--allow-empty", "-m", "initial commit")

    def _commit(self, repo_id: str, lines: list[dict]) -> str:
        repo = self.repo_dir(repo_id)
        header = lines[0]["value"]
        for line in lines[1:]:
            value = line["value"]
            path = value["path"]
            if path.startswith("/") or ".." in path.split("/"):
                raise ValueError(f"bad path {path}")
            dest = repo / path
            dest.parent.mkdir(parents=True, exist_ok=True)
            if line["key"] == "file":
                dest.write_bytes(base64.b64decode(value["content"]))
            elif line["key"] == "lfsFile":
                dest.write_bytes((self.lfs / value["oid"]).read_bytes())
            else:
                raise ValueError(f"unsupported operation {line['key']}")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "--allow-empty", "-m", header.get("summary") or "commit")
        return _git(repo, "rev-parse", "HEAD").decode().strip()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: bytes = b"", ctype: str = "application/json",
                      headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, status: int, doc) -> None:
                self._send(status, json.dumps(doc).encode())

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _authorized(self) -> bool:
                if server.token is None or self.headers.get("Authorization") == f"Bearer {server.token}":
                    return True
                self._json(401, {"error": "Invalid credentials"})
                return False

            def do_POST(self) -> None:
                path = unquote(urlsplit(self.path).path)
                server.requests.append(f"POST {path}")
                if not self._authorized():
                    return
                body = self._body()
                parts = path.strip("/").split("/")
                with server.lock:
                    if path == "/api/repos/create":
                        doc = json.loads(body)
                        repo_id = f"{doc['organization']}/{doc['name']}" if doc.get("organization") else doc["name"]
                        server._create(repo_id)
                        return self._json(200, {"url": f"{server.url}/{repo_id}"})
                    if path == "/api/validate-yaml":  # README front matter check before upload
                        content = json.loads(body)["content"]
                        ok = content.startswith("---\n") and "\n---\n" in content[4:]
                        return self._json(200 if ok else 400, {"errors": [] if ok else [{"message": "no YAML"}],
                                                               "warnings": []})
                    if parts[:2] == ["api", "models"] and parts[4] == "preupload":
                        files = json.loads(body)["files"]
                        return self._json(200, {"files": [
                            {"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular",
                             "shouldIgnore": False} for f in files]})
                    if path.endswith(".git/info/lfs/objects/batch"):
                        objects = json.loads(body)["objects"]
                        out = []
                        for o in objects:
                            item = {"oid": o["oid"], "size": o["size"], "authenticated": True}
                            if not (server.lfs / o["oid"]).exists():
                                item["actions"] = {"upload": {"href": f"{server.url}/lfs-upload/{o['oid']}"}}
                            out.append(item)
                        return self._json(200, {"transfer": "basic", "objects": out})
                    if parts[:2] == ["api", "models"] and parts[4] == "commit":
                        repo_id = "/".join(parts[2:4])
                        lines = [json.loads(x) for x in body.splitlines() if x.strip()]
                        oid = server._commit(repo_id, lines)
                        return self._json(200, {"commitUrl": f"{server.url}/{repo_id}/commit/{oid}",
                                                "commitOid": oid, "pullRequestUrl": None})
                    if parts[:2] == ["api", "models"] and parts[4] == "tag":
                        repo_id, revision = "/".join(parts[2:4]), "/".join(parts[5:])
                        tag = json.loads(body)["tag"]
                        repo = server.repo_dir(repo_id)
                        if _git(repo, "tag", "-l", tag).strip():
                            return self._json(409, {"error": f"tag {tag} already exists"})
                        _git(repo, "tag", tag, revision)
                        return self._json(200, {})
                self._json(404, {"error": f"no route {path}"})

            def do_DELETE(self) -> None:
                path = unquote(urlsplit(self.path).path)
                server.requests.append(f"DELETE {path}")
                if not self._authorized():
                    return
                parts = path.strip("/").split("/")
                if parts[:2] == ["api", "models"] and parts[4] == "tag":
                    repo = server.repo_dir("/".join(parts[2:4]))
                    with server.lock:
                        if not _git(repo, "tag", "-l", parts[5]).strip():
                            return self._json(404, {"error": "tag not found"})
                        _git(repo, "tag", "-d", parts[5])
                    return self._json(200, {})
                self._json(404, {"error": f"no route {path}"})

            def do_PUT(self) -> None:
                path = urlsplit(self.path).path
                server.requests.append(f"PUT {path}")
                if path.startswith("/lfs-upload/"):
                    oid = path.rsplit("/", 1)[1]
                    body = self._body()
                    if hashlib.sha256(body).hexdigest() != oid:
                        return self._json(400, {"error": "sha256 mismatch"})
                    (server.lfs / oid).write_bytes(body)
                    return self._send(200)
                self._json(404, {"error": f"no route {path}"})

            def do_GET(self) -> None:
                path = unquote(urlsplit(self.path).path)
                server.requests.append(f"{self.command} {path} {self.headers.get('Range', '')}".rstrip())
                if path == "/api/models":  # HfApi.list_models(author=..., filter=...)
                    query = parse_qs(urlsplit(self.path).query)
                    return self._json(200, server.list_models(query.get("author", [None])[0],
                                                              query.get("filter", [])))
                parts = path.strip("/").split("/")
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo, revision, file = server.repo_dir("/".join(parts[:2])), parts[3], "/".join(parts[4:])
                    try:
                        data = _git(repo, "show", f"{revision}:{file}")
                    except (subprocess.CalledProcessError, FileNotFoundError, NotADirectoryError):
                        return self._json(404, {"error": "Entry not found"})
                    rng = self.headers.get("Range", "")
                    if rng.startswith("bytes=") and rng.endswith("-"):
                        start = int(rng[6:-1])
                        return self._send(206, data[start:], "application/octet-stream",
                                          {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
                    return self._send(200, data, "application/octet-stream")
                self._json(404, {"error": f"no route {path}"})

            do_HEAD = do_GET

        return Handler
