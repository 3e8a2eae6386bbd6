"""Which models the server holds: loaded on first request by name, kept for a keep-alive, at most K at once.

A name resolves as `zoo run` resolves it (`zoo.store.resolve`: the local store, else a pull or a catalog
build); `--models PATH` also serves an artifact directory under its directory name. One loaded model has
one Scheduler (a thread that batches its requests' decode steps); loading and unloading happen here only.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.errors import RuntimeModelError

from .errors import ApiError, ErrorCode

if TYPE_CHECKING:
    from zoo.runtime.model import Model
    from zoo.runtime.tokenizer import Tokenizer

    from .scheduler import Scheduler

log = logging.getLogger("zoo.serve")

DEFAULT_CTX = 4096  # as `zoo run`: the model's context, at most this (the KV cache is allocated for it)
DEFAULT_BATCH = 8  # sequences one model decodes together (each has a KV cache, committed as it fills)
_NUMBER = r"[0-9]*\.?[0-9]+"
_PART = re.compile(rf"({_NUMBER})(ms|s|m|h)")
_UNIT_S = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | float | int | None) -> float | None:
    """Seconds for a keep-alive: '5m', '30s', '1h30m', '0', 300 (seconds); None = forever (a negative value,
    as in Ollama)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = value.strip() if isinstance(value, str) else ""
        body = text.removeprefix("-")
        if re.fullmatch(_NUMBER, body):
            seconds = float(body)
        elif re.fullmatch(rf"(?:{_NUMBER}(?:ms|s|m|h))+", body):
            seconds = sum(float(n) * _UNIT_S[unit] for n, unit in _PART.findall(body))
        else:
            raise ApiError(ErrorCode.BAD_REQUEST, f"{value!r} is not a duration (examples: 5m, 30s, 1h30m, 0, -1)")
        seconds = -seconds if text.startswith("-") else seconds
    return None if seconds < 0 else seconds


@dataclass
class Loaded:
    """A loaded model with its tokenizer and the Scheduler that runs its requests (one KV slot each)."""

    name: str  # canonical "name:tag"
    path: Path
    model: Model
    tok: Tokenizer
    scheduler: Scheduler  # owns the model: its thread runs every forward
    size: int  # bytes of the artifact's files
    pinned: bool = False  # preloaded with --models: no keep-alive expiry
    halt: threading.Event = field(default_factory=threading.Event)  # the manager's: set, generations end
    busy: int = 0  # requests holding or waiting for the model
    last_used: float = field(default_factory=time.monotonic)
    expires_at: float | None = None  # time.monotonic(); None = never

    def expires_wall(self) -> float | None:
        """expires_at as a Unix time (what /api/ps reports)."""
        return None if self.expires_at is None else time.time() + self.expires_at - time.monotonic()


class ModelManager:
    """Loads models by name on demand; keeps each for keep_alive seconds after its last request (None =
    forever) and at most max_loaded at once, unloading the least recently used first."""

    def __init__(self, keep_alive: float | None = 300.0, max_loaded: int = 1, ctx: int | None = None,
                 max_batch: int = DEFAULT_BATCH) -> None:
        if max_loaded < 1:
            raise RuntimeModelError(f"max loaded models must be >= 1, got {max_loaded}")
        import numba

        self.keep_alive, self.max_loaded, self.ctx, self.max_batch = keep_alive, max_loaded, ctx, max_batch
        self.threads = numba.get_num_threads()  # set by --threads in this thread; each scheduler thread sets its own
        self.paths: dict[str, Path] = {}  # served name -> artifact directory (from --models PATH)
        self.loaded: dict[str, Loaded] = {}  # insertion order = least recently used first
        self._loading: dict[str, asyncio.Lock] = {}
        self._guard = threading.Lock()  # self.loaded is also changed by a preload before the event loop runs
        self.halt = threading.Event()  # set when the server stops: running generations end at their next token

    # ---- names -----------------------------------------------------------------------------
    def canonical(self, name: str) -> str:
        """The key of a requested name: 'tiny' and 'tiny:latest' are one model; a filesystem path is not a
        name a client may send (serve a directory with --models PATH)."""
        from zoo.registry import parse_ref

        if not isinstance(name, str) or not name.strip():
            raise ApiError(ErrorCode.BAD_REQUEST, "model: a model name is required")
        if name in self.paths:
            return name
        if name.startswith((".", "/", "~")) or "\\" in name:
            raise ApiError(ErrorCode.NOT_FOUND, f"{name}: a path is not a model name (serve a directory with "
                                                "zoo serve --models PATH)")
        try:
            ref = parse_ref(name)
        except Exception as err:  # RegistryError for a malformed name
            raise ApiError(ErrorCode.NOT_FOUND, f"{name}: not a model name ({err})") from None
        if ref.registry is not None:  # a client must not make the server fetch from any URL it names
            raise ApiError(ErrorCode.NOT_FOUND, f"{name}: a registry reference is not served; pull it first "
                                                "(zoo pull) or serve it with zoo serve --models")
        return f"{ref.store_name}:{ref.tag}"

    def add_name(self, name: str) -> str:
        """A name given with --models: a full registry reference (s3://, hf://, http(s)://) is pulled into
        the store first, then served under its store name; returns the served name."""
        from zoo.registry import parse_ref
        from zoo.store import resolve

        ref = parse_ref(name)
        if ref.registry is not None:
            resolve(name, log=lambda msg: log.info("%s", msg))
        return self.canonical(f"{ref.store_name}:{ref.tag}")

    def add_path(self, path: Path) -> str:
        """Serve an artifact directory under '<directory name>:latest'; returns that name."""
        name = self.canonical(path.name)
        if name in self.paths and self.paths[name] != path:
            raise RuntimeModelError(f"two directories would both be served as {name}: {self.paths[name]}, {path}")
        self.paths[name] = path
        return name

    # ---- loading ---------------------------------------------------------------------------
    def load_blocking(self, key: str, pinned: bool = False) -> Loaded:
        """Resolve (pull or build when missing, as `zoo run`), load and warm a model; blocks (a thread's job)."""
        from zoo.runtime import load
        from zoo.store import resolve

        from .scheduler import Scheduler

        path = self.paths.get(key) or resolve(key, log=lambda msg: log.info("%s", msg))
        t0 = time.perf_counter()
        model, tok = load(path, ctx=self.ctx or DEFAULT_CTX, verify=True)  # the model's own context caps it
        if tok is None:
            raise RuntimeModelError(f"{key}: the artifact has no tokenizer.json, so it cannot take text")
        scheduler = Scheduler(key, model, tok, self.max_batch, self.halt, self.threads)
        scheduler.warm()  # prefill and decode kernels: numba compiles once, then loads its cache
        size = sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())
        log.info("loaded %s from %s in %.2f s (context %d)", key, path, time.perf_counter() - t0, model.ctx)
        entry = Loaded(key, Path(path), model, tok, scheduler.start(), size, pinned=pinned, halt=self.halt)
        self._insert(entry)
        return entry

    def _insert(self, entry: Loaded) -> None:
        with self._guard:
            old = self.loaded.pop(entry.name, None)
            if old is not None and old is not entry:
                old.scheduler.close()
            self.loaded[entry.name] = entry
            entry.expires_at = None if entry.pinned or self.keep_alive is None else time.monotonic() + self.keep_alive
            while len(self.loaded) > self.max_loaded:
                others = [e for e in self.loaded.values() if e is not entry]  # least recently used first
                victim = min(others, key=lambda e: (e.busy > 0, e.pinned))  # idle, then not preloaded, first
                self._unload(victim, "least recently used")

    def _unload(self, entry: Loaded, why: str) -> None:
        """Forget a model (a request still running on it keeps its reference and finishes)."""
        if self.loaded.get(entry.name) is entry:
            del self.loaded[entry.name]
            entry.scheduler.close()  # its thread ends once the sequences it runs are done
            log.info("unloaded %s (%s)", entry.name, why)

    async def get(self, name: str) -> Loaded:
        """The loaded model for a requested name, loading it first (off the event loop) if needed; the
        caller must `release` it. Unknown names raise ApiError 404."""
        key = self.canonical(name)
        entry = self.loaded.get(key)
        if entry is None:
            lock = self._loading.setdefault(key, asyncio.Lock())
            async with lock:  # concurrent first requests load once
                entry = self.loaded.get(key)
                if entry is None:
                    entry = await asyncio.to_thread(self.load_blocking, key)
        with self._guard:
            if self.loaded.get(key) is entry:  # most recently used goes last
                self.loaded[key] = self.loaded.pop(key)
        entry.busy += 1
        entry.last_used = time.monotonic()
        return entry

    def release(self, entry: Loaded, keep_alive: float | None | bool = True) -> None:
        """A request is done with a model: restart its keep-alive (`True` = the server's default; a request's
        own keep_alive otherwise, 0 unloading it now, None keeping it loaded)."""
        entry.busy -= 1
        entry.last_used = time.monotonic()
        seconds = self.keep_alive if keep_alive is True else keep_alive
        if entry.pinned:
            return
        entry.expires_at = None if seconds is None else entry.last_used + seconds
        if seconds == 0 and not entry.busy:
            with self._guard:
                self._unload(entry, "keep_alive 0")

    def expire(self, now: float | None = None) -> None:
        """Unload every idle model whose keep-alive has run out."""
        now = time.monotonic() if now is None else now
        with self._guard:
            for entry in list(self.loaded.values()):
                if not entry.busy and entry.expires_at is not None and entry.expires_at <= now:
                    self._unload(entry, "keep-alive expired")

    async def reaper(self, period: float = 1.0) -> None:
        """Background task: expire models every `period` seconds until cancelled."""
        while True:
            await asyncio.sleep(period)
            self.expire()
