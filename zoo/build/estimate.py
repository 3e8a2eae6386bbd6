"""What a build will cost before it starts: the bytes its base needs downloaded and its wall time here.

The time comes from measurements, said as such: a card's `metrics.build_seconds` is the wall time of the
compress that made its files, on the machine its speeds name (`metrics.decode_tps.machine`). On another
machine it is scaled by vCPU count, the one thing both descriptions state. A card with no measured time
(the 7B cards) is extrapolated from the most similar measured catalog card by parameters and calibration
tokens, and says that this is a floor: SparseGPT and GPTQ grow faster than linearly with layer width.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

from zoo import card as cards

from . import base as bases

_VCPUS = re.compile(r"(\d+) vCPU")


@dataclass(frozen=True)
class BuildEstimate:
    """A build's cost: bytes to download (None: unknown), wall seconds (None: nothing to scale from), and the
    sentence that says both and where they come from."""

    name: str
    download_bytes: int | None
    seconds: float | None
    words: str

    def exceeds(self, max_seconds: float, max_bytes: int) -> bool:
        """Whether this is long work: over either limit, or a download of unknown size. An unknown time alone
        is not (the words say it is unknown): every catalog card that lacks one has a measured neighbour."""
        return (self.seconds is not None and self.seconds > max_seconds
                or self.download_bytes is None or self.download_bytes > max_bytes)


def machine() -> str:
    """This CPU described the way cards name theirs: 'model (widest SIMD), N vCPU, OS arch'."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = "AVX-512 VNNI" if "avx512_vnni" in flags else "AVX-512" if "avx512f" in flags else \
        "AVX2" if "avx2" in flags else None
    return f"{model}{f' ({simd})' if simd else ''}, {os.cpu_count()} vCPU, {platform.system()} {platform.machine()}"


def duration(seconds: float) -> str:
    """A wall time as people say it: 45 s, 12 min, 3.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_build(card: dict, cache: Path, *, here: str | None = None,
                   catalog: list[tuple[str, dict]] | None = None) -> BuildEstimate:
    """The cost of building `card` on this machine (`here`: its description, default `machine()`), with its
    base cached under `cache`; `catalog` (default the built-in one) holds the measured cards to extrapolate from."""
    from .build import compress_recipe

    name = card.get("name") or "this model"
    recipe = compress_recipe(card, name)
    here = here or machine()
    seconds, time_words = _time(card, recipe, here, catalog)
    size = bases.download_size(card["recipe"]["base"], cache)
    base = bases.describe(card["recipe"]["base"])
    if size == 0:
        fetch_words = "nothing to download (the base is here)"
    elif size is None:
        fetch_words = f"downloads {base} (size unknown)"
    else:
        fetch_words = f"downloads {cards.human_size(size)} ({base}), plus the time that takes"
    return BuildEstimate(name, size, seconds, f"building {name}: {fetch_words}; {time_words}")


def _time(card: dict, recipe, here: str, catalog: list[tuple[str, dict]] | None) -> tuple[float | None, str]:
    """(seconds, what they rest on) for compressing `card` here."""
    measured = (card.get("metrics") or {}).get("build_seconds")
    if measured:
        seconds, scaled = _scale(measured, _machine_of(card), here)
        recovery = f", {recipe.recover} recovery included" if recipe.recover != "none" else ""
        return seconds, f"measured {duration(measured)} on {_machine_of(card)}{recovery}{scaled}"
    reference = _most_similar(card, recipe, catalog)
    if reference is None:
        return None, "no build time was measured for this card or a similar one: the time is unknown, maybe hours"
    ref_name, ref_card, ref_recipe = reference
    ref_seconds = ref_card["metrics"]["build_seconds"]
    params = (card.get("parameters") or 0) / ref_card["parameters"]
    tokens = (recipe.samples * recipe.seq_len) / (ref_recipe.samples * ref_recipe.seq_len) \
        if recipe.uses_calibration and ref_recipe.uses_calibration else 1.0
    seconds, scaled = _scale(ref_seconds * params * tokens, _machine_of(ref_card), here)
    extra = f"; the recipe's {recipe.recover} recovery is not in it" \
        if recipe.recover != "none" and ref_recipe.recover == "none" else ""
    return seconds, (f"no time measured for this card; the most similar, {ref_name}, measured {duration(ref_seconds)} "
                     f"on {_machine_of(ref_card)}; x{params:.0f} parameters, x{tokens:.0f} calibration tokens"
                     f"{scaled}: roughly {duration(seconds)}, likely more ({recipe.method}/{recipe.quantizer} grow "
                     f"faster than linearly with layer width){extra}")


def _machine_of(card: dict) -> str:
    """The machine a card's measurements were made on, as the card names it."""
    return ((card.get("metrics") or {}).get("decode_tps") or {}).get("machine") or "an unstated machine"


def _scale(seconds: float, there: str, here: str) -> tuple[float, str]:
    """`seconds` measured `there`, scaled to `here` by vCPU count; and the words saying how."""
    if there == here:
        return seconds, ", a machine like this one"
    theirs, ours = (_VCPUS.search(m) for m in (there, here))
    if theirs is None or ours is None or theirs.group(1) == ours.group(1):
        return seconds, f"; this machine ({here}) may differ"
    scaled = seconds * int(theirs.group(1)) / int(ours.group(1))
    return scaled, f"; scaled to this machine's {ours.group(1)} vCPUs ({here})"


def _most_similar(card: dict, recipe, catalog: list[tuple[str, dict]] | None):
    """(name, card, recipe) of the measured catalog card closest to `recipe`: calibrated and pruned alike first,
    then the same method, quantizer, pattern and bits, then the most parameters (the shortest extrapolation)."""
    from zoo.errors import ZooError
    from zoo.registry.transfer import catalog_cards

    from .build import compress_recipe

    best, best_key = None, None
    for name, other in catalog if catalog is not None else catalog_cards():
        if not (other.get("metrics") or {}).get("build_seconds") or not other.get("parameters") \
                or not other.get("recipe") or not card.get("parameters"):
            continue
        try:
            theirs = compress_recipe(other, name)
        except ZooError:
            continue
        key = (theirs.uses_calibration == recipe.uses_calibration, (theirs.sparsity > 0) == (recipe.sparsity > 0),
               theirs.method == recipe.method, theirs.quantizer == recipe.quantizer, theirs.pattern == recipe.pattern,
               theirs.bits == recipe.bits, other["parameters"])
        if best_key is None or key > best_key:
            best, best_key = (name, other, theirs), key
    return best
