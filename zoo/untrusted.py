"""Bounded loaders for untrusted JSON and YAML: the readers' limits (format/SPEC.md 1.1) on size, nesting,
duplicate keys and alias expansion, for headers, cards and registry manifests alike.

Apart from zoo.format so that reading a manifest (a pull, `zoo list`) does not import numpy.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from zoo.errors import FormatError, ZooError

MAX_HEADER_BYTES = 100_000_000  # the safetensors limit on a header (and the readers' default JSON limit)

# Readers' limits on untrusted JSON and YAML (SPEC.md 1.1): deep enough for any real header, card or
# manifest, small enough that no parser recurses out of stack and no alias bomb expands.
MAX_JSON_DEPTH = 64  # nesting of objects and arrays in a header, the zoo metadata or a manifest
MAX_YAML_DEPTH = 64  # nesting of mappings and sequences in a card
MAX_YAML_BYTES = 4 << 20  # size of a card
MAX_YAML_NODES = 200_000  # nodes of a card with every alias expanded (a billion-laughs card has 10**9)


def loads_json(text: str | bytes, where: str, error: type[ZooError] = FormatError,
               max_bytes: int = MAX_HEADER_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads with the readers' limits: size, nesting depth, and duplicate object keys refused."""
    if len(text) > max_bytes:
        raise error(f"{where}: JSON of {len(text)} bytes exceeds the limit of {max_bytes}")
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        value = json.loads(text, object_pairs_hook=lambda pairs: _unique_keys(pairs, where, error))
    except RecursionError:  # json's C parser guards its own recursion: far deeper than max_depth
        raise error(f"{where}: JSON nested deeper than {max_depth} levels") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise error(f"{where}: not valid JSON ({err.__class__.__name__})") from None
    if _json_depth(value) > max_depth:
        raise error(f"{where}: JSON nested deeper than {max_depth} levels")
    return value


def _unique_keys(pairs: list[tuple[str, Any]], where: str, error: type[ZooError]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise error(f"{where}: duplicate JSON key {dup[:80]!r}")
    return out


def _json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (a tree: JSON has no shared nodes)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


class _LimitExceeded(Exception):
    pass


class _BoundedSafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that composes at most MAX_YAML_DEPTH levels and refuses alias expansion bombs."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise _LimitExceeded(f"nested deeper than {MAX_YAML_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        if _expanded_nodes(node) > MAX_YAML_NODES:
            raise _LimitExceeded(f"more than {MAX_YAML_NODES} nodes with its aliases expanded")
        return node


def _expanded_nodes(root: yaml.Node) -> int:
    """How many nodes the document has once every alias is expanded (memoized per node; a cycle counts
    as unbounded). Visiting children before parents, without recursion."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, ready = stack.pop()
        if id(node) in sizes:
            continue
        children = ([c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode)
                    else node.value if isinstance(node, yaml.SequenceNode) else [])
        if not ready:
            if id(node) in open_nodes:
                return MAX_YAML_NODES + 1  # a recursive alias expands forever
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        open_nodes.discard(id(node))
        if any(id(c) not in sizes for c in children):
            return MAX_YAML_NODES + 1  # a child still open: a cycle through an alias
        sizes[id(node)] = min(1 + sum(sizes[id(c)] for c in children), MAX_YAML_NODES + 1)
    return sizes[id(root)]


def load_yaml(text: str | bytes, where: str, error: type[ZooError] = FormatError) -> Any:
    """yaml.safe_load with the readers' limits: size, nesting depth and expanded size (aliases)."""
    if len(text) > MAX_YAML_BYTES:
        raise error(f"{where}: {len(text)} bytes of YAML exceed the limit of {MAX_YAML_BYTES}")
    loader = None
    try:
        loader = _BoundedSafeLoader(text)  # the reader decodes (and may refuse) the first bytes right here
        return loader.get_single_data()
    except _LimitExceeded as err:
        raise error(f"{where}: YAML {err}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise error(f"{where}: not valid YAML ({str(err).splitlines()[0] if str(err) else err.__class__.__name__})") from None
    finally:
        if loader is not None:
            loader.dispose()
