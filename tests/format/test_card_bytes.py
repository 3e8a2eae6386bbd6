"""A card whose bytes are not UTF-8 (or hold characters YAML refuses) is a one-line error, not the
"internal error: ReaderError" the fuzz campaign found (bench/fuzz.py, seed 7 case 44): PyYAML decodes
a byte string while the loader is being constructed, before parsing starts."""

from __future__ import annotations

import pytest

from zoo.card import load as load_card
from zoo.errors import CardError, FormatError
from zoo.format import open_artifact
from zoo.untrusted import load_yaml
from zoo.synthetic import TINY_LLAMA, write_random_model

BAD_CARDS = [b"card_version: 1\ndescription: caf\xe2\x28\xa1\n", b"name: \xff\xfe\n", b"name: x\x00y\n",
             b"\xef\xbb\xbfname: \x1b[31m\n"]


@pytest.mark.parametrize("raw", BAD_CARDS)
def test_load_yaml_refuses_undecodable_bytes_in_one_line(raw):
    with pytest.raises(FormatError, match=r"^where: not valid YAML \(") as err:
        load_yaml(raw, "where")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("raw", BAD_CARDS[:2])
def test_reader_and_card_loader_refuse_such_a_card(raw, tmp_path):
    art = write_random_model(tmp_path / "m", TINY_LLAMA, encoding="q8", group_size=32)
    (art / "zoo.yaml").write_bytes(raw)
    with pytest.raises(FormatError, match="zoo.yaml: not valid YAML"):
        open_artifact(art)
    with pytest.raises(CardError, match="not valid YAML"):
        load_card(art / "zoo.yaml")
