"""One resolver for every command that takes a model: what MODEL names, as an artifact directory to open.

MODEL may be a zoo artifact directory, a GGUF file or a Hugging Face (or compressed-tensors) checkpoint
directory, a full registry reference (s3://, hf://, http(s)://, oci://), or NAME[:TAG] (`:latest` implied)
found in the local store, pulled from the registry, or built from its catalog recipe. A path that does not
exist is reported as a missing path, never as an unknown model name; an unknown name gets "did you mean".

A checkpoint is converted (with `zoo convert`'s defaults) into an artifact cached under ZOO_HOME/converted,
keyed by the source's path and reused while its files keep their sizes and modification times, so a second
`zoo run model.gguf` starts at once. A one-line note on stderr says so, where, and how to keep a copy.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import shlex
import shutil
import tempfile
from pathlib import Path

from zoo.cli.consoles import stderr_console
from zoo.errors import ConvertError, NotFoundError, RegistryError

REGISTRY_SCHEMES = ("s3://", "hf://", "http://", "https://", "oci://")
FILE_SUFFIXES = (".gguf", ".safetensors")  # an argument ending so names a file, never a model
STAMP = "source.json"  # beside a cached conversion: the source it was made from, as it was then


class Checkpoints(enum.Enum):
    """What a command does with a GGUF file or checkpoint directory it is given instead of an artifact."""

    CONVERT = "convert"  # convert into a cached artifact and use that (run, bench, eval --engine runtime)
    READ = "read"  # return the path: the command reads checkpoints itself (eval's reference engine, compress)
    REFUSE = "refuse"  # refuse in one line naming the `zoo convert` command to run (show, inspect, verify, export)


def resolve_model(model: str, checkpoints: Checkpoints = Checkpoints.CONVERT, *, fetch: bool = True,
                  yes: bool | None = None, quiet: bool = False) -> Path:
    """The path to open for MODEL (see the module docstring): an artifact directory, or with
    Checkpoints.READ possibly the checkpoint itself. NotFoundError names what is missing: a path,
    a registry reference, or a model name (with near names when there are some).

    `fetch` False keeps to the local store (a name not pulled is an error naming `zoo pull`). A name that
    is built from its catalog recipe is confirmed as `zoo pull` confirms it: `yes` skips the question; None
    means the command has no --yes, so a refusal names `zoo pull NAME --yes` instead. `quiet` silences notes.
    """
    path = local_path(model, checkpoints)
    if path is not None:
        return path
    if "://" in model:
        return _reference(model, fetch, quiet)
    return _named(model, fetch, yes, quiet)


def local_path(model: str, checkpoints: Checkpoints = Checkpoints.CONVERT) -> Path | None:
    """The path MODEL names when it names one (an artifact directory, or a checkpoint handled as `checkpoints`
    says); None when MODEL is a model name or a registry reference. A path that does not exist is a
    NotFoundError naming it as a path."""
    if "://" in model:
        return None
    path = Path(model).expanduser()
    if path.exists():
        if (path / "zoo.yaml").is_file():
            return path
        return _checkpoint(model, path, checkpoints)
    if model.lower().endswith(FILE_SUFFIXES):
        raise NotFoundError(f"{model}: no such file")
    if model.startswith((".", "/", "~")) or ((os.sep in model or "/" in model) and not _is_name(model)):
        raise NotFoundError(f"{model}: no such artifact directory or file")
    return None


def _note(message: str) -> None:
    stderr_console().print(f"zoo: {message}", soft_wrap=True)  # one line, also when a parent process reads it


def _is_name(text: str) -> bool:
    """Is `text` a valid NAME[:TAG] ('org/name' is one, up to two slashes)?"""
    from zoo.registry import parse_ref

    try:
        parse_ref(text)
        return True
    except RegistryError:
        return False


def _reference(model: str, fetch: bool, quiet: bool) -> Path:
    """A full registry reference: the stored copy, pulled when missing (unless `fetch` is False)."""
    from zoo.registry import parse_ref
    from zoo.store import resolve

    if not model.startswith(REGISTRY_SCHEMES):
        scheme = model.split("://", 1)[0]
        raise RegistryError(f"{model}: {scheme}:// is not a registry scheme (use s3://, hf://, http(s)://, oci://), "
                            "and no such file or directory exists")
    if not fetch:
        return _stored(model, parse_ref(model))
    try:
        return resolve(model, log=None if quiet else _note)
    except NotFoundError as missing:
        raise NotFoundError(f"{model}: not found in its registry ({missing})") from None


def _stored(model: str, ref) -> Path:
    """The local store's copy of a parsed reference, or a NotFoundError naming `zoo pull`."""
    from zoo.store import Store

    store = Store()
    if not store.has(ref.store_name, ref.tag):
        raise NotFoundError(f"{model}: not in the local store (`zoo pull {model}` fetches it; "
                            f"`zoo show {model}` shows its card)")
    return store.path(ref.store_name, ref.tag)


def _named(model: str, fetch: bool, yes: bool | None, quiet: bool) -> Path:
    """NAME[:TAG]: the local store, else the default registry, else its catalog recipe (asked first when long,
    as `zoo pull` asks)."""
    from zoo.cli.long_work import confirm_build, step_progress
    from zoo.cli.names import suggest_names
    from zoo.registry import parse_ref
    from zoo.store import Store, resolve

    with suggest_names(model, Store()):
        try:
            if not fetch:
                return _stored(model, parse_ref(model))
            go_ahead = "run again with --yes to go ahead" if yes is not None else \
                f"build it first with `zoo pull {model} --yes`"
            with step_progress(quiet) as steps:
                return resolve(model, log=None if quiet else _note, steps=steps,
                               confirm=confirm_build(bool(yes), quiet, go_ahead=go_ahead))
        except NotFoundError as missing:
            if "/" in model:  # 'org/name' could have meant a path too: say that neither exists
                raise NotFoundError(f"{model}: no such artifact directory or file, and {missing}") from None
            raise


def _checkpoint(model: str, path: Path, checkpoints: Checkpoints) -> Path:
    """A GGUF file or checkpoint directory, handled as the command's policy says."""
    if checkpoints is Checkpoints.READ:
        return path
    keep = f"zoo convert {shlex.quote(model)} -o {shlex.quote(_stem(path))}"
    if checkpoints is Checkpoints.REFUSE:
        from zoo.convert.source import open_source

        open_source(path)  # a path that is no checkpoint either (an empty dir, a text file) is said as such
        raise ConvertError(f"{model}: not a zoo artifact (no zoo.yaml); convert it first: {keep}")
    return _converted(model, path, keep)


def _stem(path: Path) -> str:
    """The directory `zoo convert` would be told to write: model.gguf -> model, a checkpoint dir -> DIR-zoo."""
    path = path.resolve()
    if path.is_dir():
        return f"{path.name}-zoo"
    return path.name[:-len(".gguf")] if path.name.lower().endswith(".gguf") and path.name != ".gguf" else path.name


def _source_state(source: Path) -> dict:
    """What the cache entry depends on: the source file(s) with size and mtime, and zoo's version."""
    from zoo import __version__

    files = [source] if source.is_file() else sorted(p for p in source.iterdir() if p.is_file())
    return {"source": str(source), "zoo": __version__,
            "files": [[f.name, (st := f.stat()).st_size, st.st_mtime_ns] for f in files]}


def _converted(model: str, path: Path, keep: str) -> Path:
    """The cached artifact converted from `path`, converting it now when absent or stale."""
    from filelock import FileLock

    from zoo.config import zoo_home

    source = path.resolve()
    root = zoo_home() / "converted"
    key = hashlib.sha256(os.fsencode(source)).hexdigest()[:16]
    entry = root / key  # holds STAMP and the artifact
    artifact = entry / _stem(source)
    state = _source_state(source)
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{key}.lock")):  # two `zoo run model.gguf` at once convert it once
        if _stamp(entry) == state and (artifact / "zoo.yaml").is_file():
            _note(f"{model}: using its conversion cached in {artifact} (to keep one: {keep})")
            return artifact
        _convert_into(model, source, entry, artifact.name, state)
    _note(f"{model}: converted to a zoo artifact, cached in {artifact} and reused while {model} is unchanged "
          f"(to keep one: {keep})")
    return artifact


def _stamp(entry: Path) -> dict | None:
    try:
        return json.loads((entry / STAMP).read_text())
    except (OSError, ValueError):
        return None


def _convert_into(model: str, source: Path, entry: Path, name: str, state: dict) -> None:
    """Convert in a staging directory beside `entry`, then replace `entry` with it (no half-written cache)."""
    from zoo.convert.convert import convert
    from zoo.convert.source import open_source

    opened = open_source(source)  # ConvertError for a path that is no checkpoint, before anything is written
    staging = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}.partial-"))
    try:
        with stderr_console().status(f"converting {model}", spinner="dots") as status:
            convert(opened, staging / name,
                    progress=lambda i, n, tensor: status.update(f"converting {model} ({i + 1}/{n} {tensor})"))
        (staging / STAMP).write_text(json.dumps(state))
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(staging, entry)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
