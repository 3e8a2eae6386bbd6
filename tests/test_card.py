"""The card schema: the built-in catalog validates strictly; bad cards fail with one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from zoo import card as cards
from zoo.errors import CardError

CATALOG = Path(__file__).resolve().parents[1] / "cards"
GOOD = {
    "card_version": 1, "name": "m", "architecture": "llama", "license": "apache-2.0", "parameters": 10,
    "base_model": {"name": "org/base", "source": None, "sha256": None},
    "compression": {"method": "wanda", "sparsity": 0.5, "pattern": "2:4", "bits": 4, "group_size": 128,
                    "calibration": {"anything": ["goes", 1]}},
    "metrics": {"size_bytes": 1000, "perplexity": {"base": 20.0, "value": 22.5, "protocol": "512-token windows"},
                "decode_tps": {"value": 80.0, "machine": "2 vCPU Xeon", "threads": 2}},
    "files": [{"path": "model-00001.safetensors", "size": 5, "sha256": "a" * 64}],
}


def test_catalog_cards_validate_strictly():
    paths = sorted(CATALOG.glob("*.yaml"))
    assert len(paths) >= 5
    for path in paths:
        card = cards.load(path, strict=True)
        assert card["name"] == path.stem, f"{path.name}: the file is named after the card"
        assert cards.search_fields(card)["architecture"] in cards.ARCHITECTURES


def test_a_full_card_validates_and_gives_search_fields():
    assert cards.validate(GOOD, strict=True) == []
    f = cards.search_fields(GOOD)
    assert (f["sparsity"], f["bits"], f["size_bytes"], f["perplexity"], f["decode_tps"]) == (0.5, 4, 1000, 22.5, 80.0)
    assert (f["perplexity_ratio"], f["perplexity_technical_ratio"]) == (1.125, None)  # no technical figure
    assert (f["decode_machine"], f["recovery"]) == ("2 vCPU Xeon", "one-shot")


@pytest.mark.parametrize("compression, recovery", [
    ({"method": "sparsegpt", "sparsity": 0.5, "bits": 4, "recovery": {"mode": "blockwise"}}, "blockwise"),
    ({"method": "none", "sparsity": 0.0, "bits": 4}, "one-shot"),  # quantized, nothing recovered
    ({"method": "none", "sparsity": 0.0, "bits": 16}, None),  # nothing compressed: nothing to recover
])
def test_search_tells_recovered_from_one_shot(compression, recovery):
    assert cards.search_fields({**GOOD, "compression": compression})["recovery"] == recovery


def test_a_ratio_needs_both_perplexities():
    no_base = {**GOOD, "metrics": {"perplexity": {"value": 22.5}}}
    assert cards.search_fields(no_base)["perplexity_ratio"] is None


@pytest.mark.parametrize("change, message", [
    ({"architecture": "gpt2"}, "architecture"),
    ({"card_version": 2}, "card_version"),
    ({"compression": {"sparsity": 1.5}}, "compression.sparsity"),
    ({"compression": {"bits": 3}}, "compression.bits"),
    ({"metrics": {"size_bytes": -1}}, "metrics.size_bytes"),
    ({"files": [{"path": "x", "size": 1, "sha256": "XYZ"}]}, "files.0.sha256"),
    ({"name": "Has Spaces"}, "name"),
])
def test_bad_cards_fail_naming_the_field(change, message):
    with pytest.raises(CardError, match=message.replace(".", r"\.")):
        cards.validate({**GOOD, **change})


def test_missing_required_and_not_a_mapping():
    with pytest.raises(CardError, match="architecture"):
        cards.validate({"card_version": 1})
    with pytest.raises(CardError, match="mapping"):
        cards.parse("- a\n- list\n")


def test_unknown_keys_warn_and_strict_refuses():
    card = {**GOOD, "colour": "blue", "metrics": {**GOOD["metrics"], "energy_j": 3}}
    warnings = cards.validate(card)
    assert len(warnings) == 2 and any("colour" in w for w in warnings) and any("energy_j" in w for w in warnings)
    with pytest.raises(CardError, match="colour|energy_j"):
        cards.validate(card, strict=True)


def test_metrics_may_be_null_and_filters_exclude_unmeasured():
    card = {"card_version": 1, "architecture": "mpt", "metrics": {"perplexity": None, "decode_tps": None}}
    assert cards.validate(card, strict=True) == []
    assert cards.matches(card, arch="mpt")
    assert not cards.matches(card, max_perplexity=1e9)
    assert not cards.matches(card, min_decode_tps=0.0)
    assert cards.matches(GOOD, "WANDA org/base", arch="llama", min_sparsity=0.5, bits=4, max_size=1000,
                         max_perplexity=23, min_decode_tps=80)
    assert not cards.matches(GOOD, max_size=999)


def test_yaml_is_loaded_safely():
    with pytest.raises(CardError, match="not valid YAML"):
        cards.parse("card_version: 1\narchitecture: !!python/object/apply:os.system ['echo owned']\n")


def test_hf_readme_front_matter():
    readme = cards.to_hf_readme(GOOD)
    assert readme.startswith("---\n")
    front = yaml.safe_load(readme.split("---\n")[1])
    assert front["base_model"] == "org/base" and front["base_model_relation"] == "quantized"
    assert front["library_name"] == "zoo" and front["license"] == "apache-2.0"
    assert {"zoo", "llama", "sparse", "int4"} <= set(front["tags"])


@pytest.mark.parametrize("text, value", [("2GB", 2 * 10**9), ("1.5GiB", int(1.5 * 2**30)), ("500mb", 500 * 10**6),
                                         ("123", 123), ("10 KiB", 10240)])
def test_parse_size(text, value):
    assert cards.parse_size(text) == value


def test_parse_size_rejects_garbage():
    with pytest.raises(CardError):
        cards.parse_size("two gigs")


def test_render_marks_unmeasured_metrics():
    from rich.console import Console

    console = Console(record=True, width=100)
    console.print(cards.render({"card_version": 1, "architecture": "llama", "name": "x"}))
    text = console.export_text()
    assert "perplexity    not measured" in text and "decode tok/s  not measured" in text
