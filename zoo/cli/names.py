""""Did you mean": near names for a model name that was not found, from the local store and the catalog.

A mistyped name costs a user a lookup in `zoo list` or `zoo search`; the error names the closest
existing models instead (difflib's ratio, as git and pip do for commands).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager

from zoo.errors import NotFoundError, ZooError

MAX_SUGGESTIONS = 3


def known_names(store, *, catalog: bool = True) -> dict[str, str]:
    """Every spelling a user could have meant, mapped to the name to suggest for it.

    A stored model is matched as NAME:TAG and as bare NAME (suggested as NAME:TAG, so `smol` finds
    `smol:v1`); a catalog card by its name.
    """
    names: dict[str, str] = {}
    for item in store.list():
        full = f"{item['name']}:{item['tag']}"
        names[full] = full
        names.setdefault(item["name"], item["name"] if item["tag"] == "latest" else full)
    if catalog:
        from zoo.registry.transfer import catalog_cards

        try:
            for name, _ in catalog_cards():
                names.setdefault(name, name)
        except ZooError:  # a broken catalog card must not hide the error being reported
            pass
    return names


def complete_model(incomplete: str) -> list[str]:
    """Shell completion for a MODEL argument: stored NAME:TAGs and catalog names starting with what was typed
    (a path is completed by the shell itself when nothing here matches)."""
    from zoo.store import Store

    try:
        names = known_names(Store())
    except (ZooError, OSError):
        return []
    return sorted({name for name in names.values() if name.startswith(incomplete)})


def _full(text: str) -> str:
    """NAME[:TAG] with the implied `:latest` written out."""
    return text if ":" in text.rsplit("/", 1)[-1] else f"{text}:latest"


def close_names(text: str, names: dict[str, str]) -> list[str]:
    """The names to suggest for `text`, closest first; never `text` itself."""
    near = difflib.get_close_matches(text.removesuffix(":latest"), list(names), n=2 * MAX_SUGGESTIONS, cutoff=0.6)
    suggestions = dict.fromkeys(names[key] for key in near)
    return [s for s in suggestions if _full(s) != _full(text)][:MAX_SUGGESTIONS]


@contextmanager
def suggest_names(text: str, store, *, catalog: bool = True) -> Iterator[None]:
    """Re-raise a NotFoundError for model `text` with "did you mean ...?" appended when a near name exists."""
    try:
        yield
    except NotFoundError as err:
        try:
            names = known_names(store, catalog=catalog)
        except ZooError:
            raise err from None
        if _full(text) in names or (":" not in text and names.get(text) == text):
            raise  # the model exists: what is missing is something else (a tag, a blob, a registry)
        near = close_names(text, names)
        if not near:
            raise
        raise NotFoundError(f"{err}; did you mean {' or '.join(near)}?") from None
