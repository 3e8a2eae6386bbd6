"""The listing reads cards with the format's bounded YAML reader: a hostile card is a one-line CardError."""

from __future__ import annotations

import shutil
import time

import pytest

from zoo.errors import CardError
from zoo.serve import ModelManager
from zoo.serve.listing import available
from zoo.store import Store

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, n in zip("abcdefgh", "bcdefghi"))


def test_a_hostile_card_is_a_clean_error_not_a_hang(home, tmp_path):
    served = tmp_path / "served"
    shutil.copytree(Store(home).path("tiny", "latest"), served)
    manager = ModelManager()
    manager.add_path(served)
    assert [m.name for m in available(manager) if m.name == "served:latest"]  # the real card lists
    (served / "zoo.yaml").write_text(BOMB)  # 9**9 nodes once its aliases are expanded
    t0 = time.perf_counter()
    with pytest.raises(CardError, match="zoo.yaml: YAML"):
        available(manager)
    assert time.perf_counter() - t0 < 5
