"""S3-compatible object storage (AWS S3, MinIO, SeaweedFS, R2, …) through s3fs.

`s3://bucket/prefix` holds the directory-registry layout as keys. Credentials and endpoint come
from the standard AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL / AWS_REGION (or
any botocore source) and are never printed: errors carry the exception type and the key only.
Objects appear atomically when their PUT (or multipart upload) completes, so uploading blobs first
and the manifest last keeps the registry consistent if a push is interrupted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zoo.errors import NotFoundError, RegistryError

from .base import FileEntry, Registry, blob_key, check_name, check_tag, manifest_bytes, manifest_key, \
    parse_manifest
from .local import INDEX_FILE, build_index

RANGE_BYTES = 8 << 20  # one ranged GET per 8 MiB of a blob (a request per MiB would be mostly round trips)
INDEX_ATTEMPTS = 8


class S3Registry(Registry):
    """s3://bucket[/prefix]."""

    def __init__(self, url: str) -> None:
        import s3fs

        path = url[len("s3://"):].strip("/")
        if not path:
            raise RegistryError(f"{url!r}: expected s3://bucket[/prefix]")
        self.root = path
        self.url = f"s3://{path}"
        client_kwargs = {}
        if os.environ.get("AWS_ENDPOINT_URL"):
            client_kwargs["endpoint_url"] = os.environ["AWS_ENDPOINT_URL"]
        if os.environ.get("AWS_REGION"):
            client_kwargs["region_name"] = os.environ["AWS_REGION"]
        self.fs = s3fs.S3FileSystem(client_kwargs=client_kwargs, skip_instance_cache=True,
                                    use_listings_cache=False)

    def _key(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    @contextmanager
    def _errors(self, what: str):
        """Map s3fs/botocore failures to one-line RegistryErrors that carry no credentials."""
        try:
            yield
        except FileNotFoundError:
            raise NotFoundError(f"{what}: not found in registry {self.url}") from None
        except (RegistryError, NotFoundError):
            raise
        except PermissionError:
            raise RegistryError(f"{self.url}: access denied for {what} (check AWS credentials)") from None
        except Exception as err:  # botocore/aiohttp errors have no common base worth naming
            raise RegistryError(f"{self.url}: {what} failed ({type(err).__name__})") from None

    def list_manifests(self) -> list[tuple[str, str]]:
        base = self._key("manifests") + "/"
        with self._errors("listing manifests"):
            keys = self.fs.find(base)
        out = []
        for key in keys:
            rel = key[len(base):] if key.startswith(base) else None
            if not rel or not rel.endswith(".json"):
                continue
            name, _, tag = rel[:-5].rpartition("/")
            try:
                out.append((check_name(name), check_tag(tag)))
            except RegistryError:
                continue
        return sorted(out)

    def get_manifest(self, name: str, tag: str) -> dict:
        with self._errors(f"{name}:{tag}"):
            data = self.fs.cat_file(self._key(manifest_key(name, tag)))
        return parse_manifest(data, f"{name}:{tag}")

    def read_blob(self, entry: FileEntry, offset: int = 0) -> tuple[int, Iterator[bytes]]:
        key = self._key(blob_key(entry.sha256))
        with self._errors(entry.path):
            size = self.fs.info(key)["size"]

        def chunks() -> Iterator[bytes]:
            pos = offset
            while pos < size:
                end = min(pos + RANGE_BYTES, size)
                with self._errors(entry.path):
                    data = self.fs.cat_file(key, start=pos, end=end)  # one ranged GET
                if not data:
                    return
                yield data
                pos += len(data)

        return offset, chunks()

    def has_blob(self, entry: FileEntry) -> bool:
        try:
            with self._errors(entry.path):
                return self.fs.info(self._key(blob_key(entry.sha256)))["size"] == entry.size
        except NotFoundError:
            return False

    def put_blob(self, entry: FileEntry, source: Path) -> None:
        with self._errors(f"uploading {entry.path}"):
            self.fs.put_file(str(source), self._key(blob_key(entry.sha256)))

    def put_manifest(self, name: str, tag: str, manifest: dict) -> None:
        with self._errors(f"writing manifest {name}:{tag}"):
            self.fs.pipe_file(self._key(manifest_key(name, tag)), manifest_bytes(manifest))
        self._write_index()

    def delete_manifest(self, name: str, tag: str) -> None:
        with self._errors(f"{name}:{tag}"):
            self.fs.rm_file(self._key(manifest_key(name, tag)))
        self._write_index()

    def _index_bytes(self) -> bytes:
        entries = []
        for name, tag in self.list_manifests():
            try:
                entries.append((name, tag, self.get_manifest(name, tag)))
            except (NotFoundError, RegistryError):
                continue
        return build_index(entries)

    def _write_index(self) -> None:
        """index.json for HTTP mirrors of the bucket, rebuilt from the manifests.

        S3 has no lock, so after writing, the listing is read again and the index rewritten until it
        agrees: a concurrent push whose stale index landed after ours then repairs it itself, since
        every pusher's last write is followed by such a check (S3 listings are strongly consistent).
        """
        index = self._index_bytes()
        for _ in range(INDEX_ATTEMPTS):
            with self._errors("writing index.json"):
                self.fs.pipe_file(self._key(INDEX_FILE), index)
            fresh = self._index_bytes()
            if fresh == index:
                return
            index = fresh
        raise RegistryError(f"{self.url}: index.json kept changing under concurrent pushes; the manifests are "
                            f"written, push again to refresh the index")
