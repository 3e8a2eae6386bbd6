"""Random damage to headers and bytes gives FormatError (or a still-valid artifact), never anything else."""

import json
import random
import shutil
import struct

import pytest

from corrupt import drop_card_files
from zoo.errors import FormatError
from zoo.format import open_artifact

VECTORS = ["sparse-q4", "sparse-q8", "q4-zeros", "sparse-f16", "tile4-q4"]


def _open_and_validate(path):
    try:
        open_artifact(path).validate()
    except FormatError:
        pass


def _mutate_json(value, rng):
    """Replace one random leaf of a JSON value with something of another kind."""
    choices = [None, -1, 0, 2**70, 1.5, "x", [], {}, [1, 2, 3], True, "1.0", "U64", [[0, 1]]]
    if isinstance(value, dict) and value and rng.random() < 0.85:
        key = rng.choice(sorted(value))
        if rng.random() < 0.1:
            del value[key]
        else:
            value[key] = _mutate_json(value[key], rng)
        return value
    if isinstance(value, list) and value and rng.random() < 0.85:
        i = rng.randrange(len(value))
        value[i] = _mutate_json(value[i], rng)
        return value
    return rng.choice(choices)


def _writable_copy(vector_dir, tmp_path):
    """(artifact copy without the card's file list, its model shard, the shard's bytes, header length)."""
    dst = tmp_path / "art"
    shutil.copytree(vector_dir, dst)
    drop_card_files(dst)
    shard = dst / "model-00001.safetensors"
    pristine = shard.read_bytes()
    (n,) = struct.unpack("<Q", pristine[:8])
    return dst, shard, pristine, n


@pytest.mark.parametrize("vector", VECTORS)
def test_byte_mutations(vector, vectors, tmp_path):
    rng = random.Random(f"bytes-{vector}")
    dst, shard, pristine, n = _writable_copy(vectors / vector, tmp_path)
    for _ in range(150):
        raw = bytearray(pristine)
        kind = rng.random()
        if kind < 0.4:  # bytes in the header
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(8, 8 + n)] = rng.randrange(256)
        elif kind < 0.8:  # bytes in the data
            for _ in range(rng.randint(1, 16)):
                raw[rng.randrange(8 + n, len(raw))] = rng.randrange(256)
        elif kind < 0.9:  # truncation
            raw = raw[: rng.randrange(len(raw))]
        else:  # the length prefix
            raw[rng.randrange(8)] = rng.randrange(256)
        shard.write_bytes(bytes(raw))
        _open_and_validate(dst)


@pytest.mark.parametrize("vector", VECTORS)
def test_header_json_mutations(vector, vectors, tmp_path):
    rng = random.Random(f"json-{vector}")
    dst, shard, pristine, n = _writable_copy(vectors / vector, tmp_path)
    header = json.loads(pristine[8:8 + n])
    for _ in range(150):
        h = json.loads(json.dumps(header))
        if rng.random() < 0.5:
            meta = json.loads(h["__metadata__"]["zoo"])
            h["__metadata__"]["zoo"] = json.dumps(_mutate_json(meta, rng))
        else:
            _mutate_json(h, rng)
        text = json.dumps(h).encode()
        text += b" " * (-(8 + len(text)) % 8)
        shard.write_bytes(struct.pack("<Q", len(text)) + text + pristine[8 + n:])
        _open_and_validate(dst)
