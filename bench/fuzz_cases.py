"""The fuzz campaign's cases: base artifacts, the mutations (one per case, chosen from a seeded RNG), and
the judge that tells a silently accepted corruption from a legitimate exit 0. bench/fuzz.py runs them.

A case is (command, target, kind, mode), all derived from (seed, index), so any case replays alone
(`bench/fuzz.py --case N`). Modes: `corrupt` damages files and leaves the card as it was (in-transit
damage: verification must refuse), `resign` rewrites the card's digests after the damage (a hostile
publisher: the validators behind verification must refuse), `no-verify` passes --no-verify.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

SHARD = "model-00001.safetensors"
BASES = ("sparse-q4", "q8")
MODEL = "tiny"  # the name the registry and store cases push and pull

# (target, kinds) per command; weights pick the command, then target and kind uniformly
FILE_TARGETS = {
    "header": ("flip", "truncate", "json-edit", "hostile"),
    "metadata": ("json-edit", "hostile"),
    "config": ("json-edit", "hostile"),
    "template": ("hostile",),
    "mask": ("flip", "set"),
    "offsets": ("flip", "set"),
    "values": ("flip", "set"),
    "scales": ("flip", "set"),
    "weights": ("flip", "set"),
    "norms": ("flip", "set"),
    "card": ("flip", "truncate", "yaml-edit", "hostile"),
    "tokenizer": ("flip", "truncate", "json-edit", "hostile"),
    "files": ("remove", "extra", "symlink", "truncate"),
}
PULL_TARGETS = {
    "registry-manifest": ("flip", "truncate", "json-edit", "hostile"),
    "registry-blob": ("flip", "truncate"),
    "store-blob": ("flip", "truncate"),
}
STORE_TARGETS = {"store-manifest": ("flip", "json-edit", "hostile")}
PART_SUFFIX = {"mask": ".bitmask", "offsets": ".row_offsets", "values": ".values", "scales": ".scales",
               "weights": (".qweight", ".values", "token_embd.weight"), "norms": "norm.weight"}
LEAVES = [None, True, -1, 0, 1, 2**63, 2**70, -2**63, 1.5, -0.0, 1e308, float("nan"), float("inf"), float("-inf"), "",
          "x", "1.0", "F16", "U64", "q4", "../../etc/passwd", [], {}, [0, 1], [[0, 1]], {"type": "llama3"}]
TEMPLATES = [
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    "{{ 'a' * 20000000000 }}", "{{ 'ab' * 9999999 * 9999999 }}", "{{ range(10**12) | list }}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.system('id') }}", "{% for m in messages %}", "{{ raise_exception('no') }}",
    "{{ '%999999999s' % 'x' }}", "{{ 'x' | center(10**10) }}", "{{ 'x'.ljust(10**10) }}",
    "{{ ('a' ~ 'b') * 10**9 }}", "{{ messages * 100000000 }}", "{{ 'x' | indent(10**10) }}",
    "{{ '{:>9999999999}'.format(1) }}", "{{ 'x' | replace('', 'y' * 1000000) | replace('', 'z' * 100000) }}",
    "{% set x = namespace(a=[]) %}{% for i in range(100000) %}{% set x.a = x.a + [i] %}{% endfor %}",
    "{{ lipsum(10**9) }}", "{{ 'a' | wordwrap(0) }}", "{{ messages[0]['content'] | truncate(-1) }}",
    "x" * (17 << 20), 12, ["not", "a", "string"], {"default": "{{ 1 }}"}, None, "{{ undefined_function() }}",
]
CONFIG_KEYS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "vocab_size", "max_seq_len",
               "norm_eps", "rope_theta", "rope_scaling", "rope_layout", "tied_embeddings", "arch", "tokenizer")
SCALINGS = [{"type": "linear", "factor": 0}, {"type": "linear", "factor": float("nan")}, {"type": "llama3"},
            {"type": "llama3", "factor": 8, "low_freq_factor": 4, "high_freq_factor": 1, "original_max_seq_len": 8},
            {"type": "yarn", "factor": 2}, {"type": "linear", "factor": -1}, "linear", [1]]


@dataclass(frozen=True)
class Case:
    """One mutation and the command it goes through."""

    index: int
    command: str  # inspect | run | verify (file targets), pull | run NAME (registry and store targets)
    target: str
    kind: str
    mode: str  # corrupt | resign | no-verify (file targets); pull (registry and store targets)
    base: str
    subprocess: bool

    @property
    def row(self) -> str:
        return f"{self.target} / {self.kind}"


def make_case(seed: int, index: int, subprocess_fraction: float) -> Case:
    rng = random.Random(f"{seed}:{index}:case")
    roll = rng.random()
    if roll < 0.12:
        command, targets = "pull", PULL_TARGETS
    elif roll < 0.15:
        command, targets = "run", STORE_TARGETS
    else:
        command, targets = rng.choices(("inspect", "run", "verify"), (9, 9, 2))[0], FILE_TARGETS
    target = rng.choice(sorted(targets))
    kind = rng.choice(targets[target])
    if targets is FILE_TARGETS:  # what the config and template validators see needs a signed (or unverified) file
        weights = (2, 6, 2) if target in ("metadata", "config", "template") else (5, 4, 1)
        mode = "corrupt" if target in ("card", "files") else rng.choices(("corrupt", "resign", "no-verify"), weights)[0]
    else:
        mode = "pull"
    return Case(index, command, target, kind, mode, rng.choice(BASES), rng.random() < subprocess_fraction)


# ---- building the bases ------------------------------------------------------------------------------


def tokenizer_json() -> bytes:
    """A tiny byte-level BPE (trained here, deterministic) with the chat special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(["hello world, the quick brown fox", "sparse models on the cpu"] * 20, trainer)
    return tok.to_str().encode()


def write_bases(root: Path) -> dict[str, Path]:
    """One tiny random Llama per base encoding, with tokenizer.json and a chat template in its config."""
    from tokenizers import Tokenizer

    from zoo.format import ArtifactWriter, encode, expected_tensors
    from zoo.synthetic import TINY_LLAMA, random_tensor

    tj = tokenizer_json()
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    config = dict(TINY_LLAMA, vocab_size=Tokenizer.from_str(tj.decode()).get_vocab_size(), n_layers=1,
                  tokenizer={"bos_token_id": None, "eos_token_ids": [2], "add_bos": False, "chat_template": template})
    out = {}
    for encoding in BASES:
        rng = np.random.default_rng(0)
        path = root / encoding
        with ArtifactWriter(path, config) as w:
            for name, shape in expected_tensors(config).items():
                linear = len(shape) == 2 and name != "token_embd.weight"
                t = random_tensor(rng, name, shape, 0.5 if linear else 0.0)
                w.add(name, encode(t, encoding, group_size=64) if linear else encode(t, "dense", dtype="F16"))
            w.add_file("tokenizer.json", tj)
            w.finish({"card_version": 1, "name": MODEL, "architecture": "llama", "license": "apache-2.0"})
        out[encoding] = path
    return out


# ---- helpers on the envelope ---------------------------------------------------------------------------


class _Raw:
    """A JSON value written verbatim (deep nesting, NaN spellings, duplicate keys)."""

    def __init__(self, text: str) -> None:
        self.text = text


def dumps(value) -> str:
    """json.dumps that writes _Raw values verbatim and ("__dup__", key, v) dict entries as duplicate keys."""
    raws: list[str] = []

    def walk(v):
        if isinstance(v, _Raw):
            raws.append(v.text)
            return f"\x00raw{len(raws) - 1}\x00"
        if isinstance(v, dict):
            return {walk(k) if isinstance(k, _Raw) else k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    text = json.dumps(walk(value))
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(f"\x00raw{i}\x00"), raw)
    return text


def split_shard(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def join_shard(header_text: str, body: bytes) -> bytes:
    raw = header_text.encode()
    raw += b" " * (-(8 + len(raw)) % 8)  # keep the data 8-aligned: the edit, not the padding, is under test
    return struct.pack("<Q", len(raw)) + raw + body


def deep(rng: random.Random, json_like: bool = True) -> str:
    n = rng.choice([100, 1000, 10_000, 200_000])
    return ("[" * n + "]" * n) if json_like else ("{a: " * n + "1" + "}" * n)


def billion_laughs(levels: int = 9) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def edit_json(value, rng: random.Random, depth: int = 0):
    """One structural edit somewhere in a JSON value: replace a leaf, delete or duplicate a key, nest deep."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(sorted(value, key=str))
        roll = rng.random()
        if roll < 0.1:
            del value[key]
        elif roll < 0.18:
            value[_Raw(json.dumps(key))] = _Raw(dumps(rng.choice(LEAVES)))  # a duplicate key, last wins
        else:
            value[key] = edit_json(value[key], rng, depth + 1)
        return value
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        if rng.random() < 0.1:
            del value[i]
        else:
            value[i] = edit_json(value[i], rng, depth + 1)
        return value
    return _Raw(deep(rng)) if rng.random() < 0.05 else rng.choice(LEAVES)


def flip(data: bytearray, start: int, end: int, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 8)):
        if end > start:
            data[rng.randrange(start, end)] ^= 1 << rng.randrange(8)


# ---- applying a case ------------------------------------------------------------------------------------


def mutate_artifact(art: Path, case: Case, rng: random.Random) -> str:
    """Apply a file target's mutation to the artifact directory `art`; return what was done."""
    shard = art / SHARD
    data = bytearray(shard.read_bytes())
    header, body = split_shard(bytes(data))
    n = struct.unpack("<Q", data[:8])[0]
    t, k = case.target, case.kind
    if t == "header":
        if k == "flip":
            flip(data, 0, 8 + n, rng)
            shard.write_bytes(data)
            return "bit flips in the header"
        if k == "truncate":
            cut = rng.randrange(0, 8 + n)
            shard.write_bytes(data[:cut])
            return f"file cut at byte {cut} (inside the header)"
        if k == "json-edit":
            shard.write_bytes(join_shard(dumps(edit_json(header, rng)), body))
            return "structural edit of the header JSON"
        choice = rng.randrange(5)
        if choice == 0:
            header["__metadata__"]["x"] = _Raw(deep(rng))
        elif choice == 1:
            name = rng.choice(sorted(k for k in header if k != "__metadata__"))
            header[_Raw(json.dumps(name))] = header[name]  # duplicate tensor entry
        elif choice == 2:
            shard.write_bytes(struct.pack("<Q", rng.choice([2**63, 2**64 - 1, 100_000_001, len(data)])) + data[8:])
            return "header length prefix out of range"
        elif choice == 3:
            header["__metadata__"]["pad"] = "x" * rng.choice([1 << 10, 1 << 20, 8 << 20])
        else:
            name = rng.choice(sorted(k for k in header if k != "__metadata__"))
            header[name]["data_offsets"] = [rng.choice([0, 2**63, -8]), rng.choice([2**64, 7, 1 << 40])]
        shard.write_bytes(join_shard(dumps(header), body))
        return f"hostile header #{choice}"
    if t in ("metadata", "config", "template"):
        meta = json.loads(header["__metadata__"]["zoo"])
        if t == "metadata":
            if k == "json-edit":
                edit_json(meta, rng)
                what = "structural edit of the zoo metadata"
            else:
                meta["tensors"] = _Raw(deep(rng)) if rng.random() < 0.5 else meta["tensors"]
                meta[_Raw('"format_version"')] = rng.choice(["1.0", "9.0", "1.x", 1])
                what = "deep or duplicate zoo metadata"
        elif t == "config":
            if k == "json-edit":
                edit_json(meta["config"], rng)
                what = "structural edit of the config"
            else:
                key = rng.choice(CONFIG_KEYS)
                value = rng.choice(SCALINGS) if key == "rope_scaling" else rng.choice(
                    [float("nan"), float("inf"), -1, 0, -1e-5, 1e300, 2**31, 2**62, 0.5, "8", True])
                meta["config"][key] = value
                what = f"config {key} = {value!r}"
        else:
            template = rng.choice(TEMPLATES)
            meta["config"]["tokenizer"]["chat_template"] = template
            what = f"chat template {str(template)[:60]!r}"
        header["__metadata__"]["zoo"] = dumps(meta)
        shard.write_bytes(join_shard(dumps(header), body))
        return what
    if t in PART_SUFFIX:
        suffixes = PART_SUFFIX[t] if isinstance(PART_SUFFIX[t], tuple) else (PART_SUFFIX[t],)
        names = sorted(name for name in header if name != "__metadata__" and name.endswith(suffixes))
        if not names:  # this base has no such part (e.g. no mask in q8): damage the shared shard's norms
            return mutate_shared(art, rng, case)
        name = rng.choice(names)
        start, end = (8 + n + o for o in header[name]["data_offsets"])
        if k == "flip":
            flip(data, start, end, rng)
        else:
            width = {"F16": 2, "F32": 4, "I32": 4, "I64": 8}.get(header[name]["dtype"], 1)
            value = rng.choice([b"\xff", b"\x00", b"\x7e", b"\xfc", b"\x80"]) * width
            for _ in range(rng.randint(1, 4)):
                at = start + rng.randrange(max(1, (end - start) // width)) * width
                data[at:at + width] = value
        shard.write_bytes(data)
        return f"{k} in {name}"
    if t == "card":
        return mutate_card(art / "zoo.yaml", k, rng)
    if t == "tokenizer":
        tok = art / "tokenizer.json"
        raw = bytearray(tok.read_bytes())
        if k == "flip":
            flip(raw, 0, len(raw), rng)
            tok.write_bytes(raw)
        elif k == "truncate":
            tok.write_bytes(raw[:rng.randrange(len(raw))])
        elif k == "json-edit":
            tok.write_text(dumps(edit_json(json.loads(raw), rng)))
        else:
            choice = rng.randrange(3)
            doc = json.loads(raw)
            if choice == 0:
                doc["model"]["vocab"] = _Raw(deep(rng))
            elif choice == 1:
                doc[_Raw('"model"')] = {"type": "BPE", "vocab": {}, "merges": []}
            else:
                doc["added_tokens"] = [{"id": i, "content": "x" * 1000 + str(i), "special": True} for i in range(2000)]
            tok.write_text(dumps(doc))
        return f"{k} of tokenizer.json"
    # files
    if k == "remove":
        victim = rng.choice(["zoo.yaml", "tokenizer.json", SHARD, "shared-00001.safetensors"])
        (art / victim).unlink()
        return f"removed {victim}"
    if k == "extra":
        extra = rng.choice(["model-00002.safetensors", "zz.safetensors"])
        shutil.copyfile(shard, art / extra)
        return f"unlisted copy {extra}"
    if k == "symlink":
        outside = art.parent / f"outside-{case.index}.safetensors"
        shutil.move(shard, outside)
        (art / SHARD).symlink_to(outside)
        return "shard symlinked outside the artifact"
    victim = rng.choice([SHARD, "shared-00001.safetensors", "tokenizer.json"])
    raw = (art / victim).read_bytes()
    (art / victim).write_bytes(raw[:rng.randrange(len(raw))] if rng.random() < 0.7 else raw + b"\0" * 8)
    return f"{victim} cut or extended"


def mutate_shared(art: Path, rng: random.Random, case: Case) -> str:
    shared = art / "shared-00001.safetensors"
    data = bytearray(shared.read_bytes())
    header, _ = split_shard(bytes(data))
    n = struct.unpack("<Q", data[:8])[0]
    name = rng.choice(sorted(k for k in header if k != "__metadata__"))
    start, end = (8 + n + o for o in header[name]["data_offsets"])
    flip(data, start, end, rng)
    shared.write_bytes(data)
    return f"flip in {name} (shared shard)"


def mutate_card(card: Path, kind: str, rng: random.Random) -> str:
    raw = bytearray(card.read_bytes())
    if kind == "flip":
        flip(raw, 0, len(raw), rng)
        card.write_bytes(raw)
        return "bit flips in zoo.yaml"
    if kind == "truncate":
        card.write_bytes(raw[:rng.randrange(len(raw))])
        return "zoo.yaml cut short"
    if kind == "yaml-edit":
        doc = yaml.safe_load(bytes(raw))
        edit_json(doc, rng)
        card.write_text(_yaml_with_raw(doc))
        return "structural edit of zoo.yaml"
    choice = rng.randrange(6)
    texts = [billion_laughs() + raw.decode(), deep(rng, json_like=False) + "\n", "a: &a [*a]\n" + raw.decode(),
             raw.decode() + "pad: '" + "x" * (5 << 20) + "'\n", "!!python/object/apply:os.system ['id']\n",
             raw.decode().replace("files:", "files: &f\n  - {path: x}\nother: *f\nfiles_:", 1)]
    card.write_text(texts[choice])
    return f"hostile zoo.yaml #{choice}"


def _yaml_with_raw(doc) -> str:
    """The edited card as flow YAML (JSON is YAML): keeps duplicate keys and deep nesting verbatim."""
    return dumps(doc).replace("NaN", ".nan").replace("-Infinity", "-.inf").replace("Infinity", ".inf")


def resign(art: Path) -> None:
    """Rewrite the card's size and sha256 of every listed file to what is on disk now (a hostile publisher)."""
    card = art / "zoo.yaml"
    text = card.read_text()
    for path in sorted(art.iterdir()):
        if path.name == "zoo.yaml" or not path.is_file():
            continue
        data = path.read_bytes()
        text = re.sub(rf"(- path: {re.escape(path.name)}\n  size: )\d+(\n  sha256: )[0-9a-f]+",
                      rf"\g<1>{len(data)}\g<2>{hashlib.sha256(data).hexdigest()}", text)
    card.write_text(text)


def mutate_manifest(path: Path, kind: str, rng: random.Random) -> str:
    raw = bytearray(path.read_bytes())
    if kind == "flip":
        flip(raw, 0, len(raw), rng)
        path.write_bytes(raw)
        return "bit flips in the manifest"
    if kind == "truncate":
        path.write_bytes(raw[:rng.randrange(len(raw))])
        return "manifest cut short"
    doc = json.loads(raw)
    if kind == "json-edit":
        path.write_text(dumps(edit_json(doc, rng)))
        return "structural edit of the manifest"
    choice = rng.randrange(6)
    if choice == 0:
        doc["card"] = _Raw(deep(rng))
    elif choice == 1:
        doc[_Raw('"files"')] = doc["files"][:1]
    elif choice == 2:
        doc["files"][0]["path"] = rng.choice(["../../escape", "/etc/passwd", "a/../../b", "x\\y", ".", ""])
    elif choice == 3:
        doc["files"][0]["size"] = rng.choice([-1, 2**64, 0, 1.5, "10"])
    elif choice == 4:
        doc["files"][0]["sha256"] = rng.choice(["0" * 64, "g" * 64, "", None])
    else:
        doc["card"]["pad"] = "x" * (17 << 20)
    path.write_text(dumps(doc))
    return f"hostile manifest #{choice}"


# ---- judging --------------------------------------------------------------------------------------------


def unvouched_files(art: Path) -> list[str]:
    """Files the runtime reads (shards, tokenizer) whose bytes the on-disk card does not vouch for: a
    digest that differs, a file it does not list, or no readable card at all. Independent of zoo.verify."""
    from zoo.errors import ZooError
    from zoo.untrusted import load_yaml

    read = sorted(p for p in art.iterdir() if p.suffix == ".safetensors" or p.name == "tokenizer.json")
    try:
        card = load_yaml((art / "zoo.yaml").read_bytes(), "judge")
        listed = {f["path"]: f["sha256"] for f in card["files"]}
    except (OSError, ZooError, TypeError, KeyError):
        return [p.name for p in read] or ["zoo.yaml"]
    return [p.name for p in read if listed.get(p.name) != hashlib.sha256(p.read_bytes()).hexdigest()]


def store_mismatches(home: Path) -> list[str]:
    """Blobs and snapshot files of the store whose bytes differ from what the store's manifests list."""
    bad = []
    for manifest_path in sorted((home / "manifests").rglob("*.json")):
        try:
            manifest = json.loads(manifest_path.read_text())
            entries = [(f["path"], f["sha256"]) for f in manifest["files"]
                       if isinstance(f["path"], str) and isinstance(f["sha256"], str)
                       and re.fullmatch(r"[0-9a-f]{64}", f["sha256"])]
        except (OSError, ValueError, TypeError, KeyError, RecursionError):
            continue  # an unreadable manifest names nothing the store serves
        snapshot = home / "snapshots" / hashlib.sha256(json.dumps(
            manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
        for rel, digest in entries:
            for path in (home / "blobs" / "sha256" / digest, snapshot / rel):
                if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                    bad.append(str(path.relative_to(home)))
    return bad
