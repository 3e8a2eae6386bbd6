"""The catalog page: its data module (zoo.serve.cards_page) on hand-made cards, and the page itself in
Debian's headless Chromium (driven by Playwright) against a real `zoo serve` with an API key."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
import yaml

from zoo.registry.transfer import push
from zoo.serve import ModelManager
from zoo.serve.cards_page import Better, Source, card_row, charts, gather, page_data, pareto_front
from zoo.store import Store

ROOT = Path(__file__).resolve().parents[2]
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
SPARSE50 = "smollm2-135m-instruct-sparse50-int4:latest"


def _card(name: str, size: int | None = None, ppl: float | None = None, tps: float | None = None,
          base: str | None = "org/base", bits: int | None = 4) -> dict:
    card = {"card_version": 1, "name": name, "architecture": "llama",
            "compression": {"method": "wanda", "sparsity": 0.5, "bits": bits,
                            "calibration": {"file": "calibration.txt", "samples": 8}},
            "metrics": {"size_bytes": size, "sparsity_per_layer": [0.5, 0.5],
                        "perplexity": {"value": ppl, "base": 10.0, "protocol": {"ctx": 128}} if ppl else None,
                        "decode_tps": {"value": tps, "machine": "test cpu", "threads": 2} if tps else None}}
    if base:
        card["base_model"] = {"name": base}
    return card


# ---- the data module -----------------------------------------------------------------------------------


def test_pareto_front_of_a_hand_made_set():
    points = [(1, 10), (2, 5), (3, 6), (4, 1), (2, 5), (5, 1)]
    # (3, 6) is beaten by (2, 5); (5, 1) by (4, 1); the two (2, 5) are equal, so neither beats the other
    assert pareto_front(points, Better.LOWER) == [True, True, False, True, True, False]
    # with x higher-is-better only the points no higher x with lower-or-equal y dominates stay: (5, 1)
    assert pareto_front(points, Better.HIGHER) == [False, False, False, False, False, True]
    assert pareto_front([(3, 3)], Better.LOWER) == [True] and pareto_front([], Better.HIGHER) == []


def test_charts_group_by_base_and_leave_out_unmeasured_points():
    rows = [card_row(*spec, [Source.CATALOG]) for spec in [
        ("a", "latest", _card("a", size=100, ppl=20.0, tps=50.0)),
        ("b", "latest", _card("b", size=50, ppl=30.0, tps=40.0)),  # smaller: on the size front; slower and worse
        ("c", "latest", _card("c", size=80, ppl=None, tps=90.0)),  # no perplexity: in no chart
        ("d", "latest", _card("d", size=10, ppl=5.0, base="org/other")),  # no speed: a size chart only
        ("e", "latest", _card("e", base=None)),  # nothing measured: no chart for its base
    ]]
    assert [r["base_model"] for r in rows] == ["org/base"] * 3 + ["org/other", "e"]
    out = charts(rows)
    assert [c["base_model"] for c in out] == ["org/base", "org/other"]
    size, speed = out[0]["charts"]
    assert (size["id"], size["x_better"], speed["id"], speed["x_better"]) == ("size", "lower", "speed", "higher")
    assert [(p["id"], p["x"], p["y"], p["front"]) for p in size["points"]] == [
        ("a:latest", 100, 20.0, True), ("b:latest", 50, 30.0, True)]
    assert [(p["id"], p["front"]) for p in speed["points"]] == [("a:latest", True), ("b:latest", False)]
    assert [c["id"] for c in out[1]["charts"]] == ["size"]


def test_a_row_carries_the_filter_fields_and_the_card_panel():
    row = card_row("a", "v1", _card("a", size=100, ppl=20.0, tps=50.0), [Source.LOCAL, Source.CATALOG])
    assert {k: row[k] for k in ("id", "sources", "local", "base_model", "sparsity", "bits", "size_bytes",
                                "perplexity", "decode_tps", "method", "machine")} == {
        "id": "a:v1", "sources": ["catalog", "local"], "local": True, "base_model": "org/base", "sparsity": 0.5,
        "bits": 4, "size_bytes": 100, "perplexity": 20.0, "decode_tps": 50.0, "method": "wanda",
        "machine": "test cpu"}
    detail = row["detail"]
    assert detail["base_model"] == {"name": "org/base"}
    assert detail["calibration"] == {"file": "calibration.txt", "samples": 8}
    assert "calibration" not in detail["compression"] and detail["compression"]["method"] == "wanda"
    assert detail["measurements"] == [  # per-layer lists and unmeasured metrics are left out
        {"metric": "size_bytes", "value": 100},
        {"metric": "perplexity", "value": 20.0, "base": 10.0, "protocol": {"ctx": 128}},
        {"metric": "decode_tps", "value": 50.0, "machine": "test cpu", "threads": 2}]


def test_the_same_model_from_several_sources_is_one_row_with_the_local_card():
    catalog, local = _card("m", size=100, ppl=20.0), _card("m", size=100, ppl=19.0)
    data = page_data([("m", "latest", catalog, Source.CATALOG), ("m", "latest", local, Source.LOCAL),
                      ("m", "v2", catalog, Source.REGISTRY)])
    assert [(r["id"], r["sources"], r["perplexity"]) for r in data["models"]] == [
        ("m:latest", ["catalog", "local"], 19.0), ("m:v2", ["registry"], 20.0)]


def test_gather_reads_catalog_registry_and_store_and_reports_a_broken_source(home, tmp_path, monkeypatch):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "cat-a.yaml").write_text(yaml.safe_dump(_card("cat-a", size=100, ppl=20.0)))
    registry = tmp_path / "registry"  # a registry directory, pushed to as `zoo push` does
    push(Store(home).path("tiny", "latest"), "pushed:v1", registry=str(registry))
    monkeypatch.setenv("ZOO_CATALOG", str(catalog))
    monkeypatch.setenv("ZOO_HOME", str(home))
    monkeypatch.setenv("ZOO_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.setenv("ZOO_REGISTRY", str(registry))
    data = gather(ModelManager())
    ids = {r["id"]: r["sources"] for r in data["models"]}
    assert ids == {"cat-a:latest": ["catalog"], "pushed:v1": ["registry"], "tiny:latest": ["local"],
                   "tiny-long:latest": ["local"], "tiny-wide:latest": ["local"]}
    assert [(s["source"], s["ok"], s["count"]) for s in data["sources"]] == [
        ("catalog", True, 1), ("registry", True, 1), ("local", True, 3)]

    (catalog / "broken.yaml").write_text("card_version: 1\narchitecture: gpt9\n")
    monkeypatch.setenv("ZOO_REGISTRY", "hf://")  # the Hub: a request per model, so not listed
    data = gather(ModelManager())
    assert {r["id"] for r in data["models"]} == {"tiny:latest", "tiny-long:latest", "tiny-wide:latest"}
    catalog_note, registry_note, _ = data["sources"]
    assert not catalog_note["ok"] and "broken.yaml" in catalog_note["message"]
    assert not registry_note["ok"] and "not listed here" in registry_note["message"]


# ---- the page in a browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium (scripts/setup.sh --test installs it), headless, one launch for the module."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed: run `bash scripts/setup.sh --test` (apt-get install chromium)")
    with sync_playwright() as pw:
        # --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start
        launched = pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def page(browser, server):
    """The catalog page, unlocked with the server's API key."""
    tab = browser.new_page()
    tab.set_default_timeout(30_000)
    tab.goto(server.url + "/")
    tab.locator("#key-form").wait_for(state="visible")  # the data route wants the key, so the page asks
    tab.fill("#key-input", server.api_key)
    tab.click("#key-form button[type=submit]")
    tab.locator("#catalog tbody tr").first.wait_for()
    yield tab
    tab.close()


def _catalog() -> dict[str, dict]:
    cards = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "cards").glob("*.yaml"))]
    return {f"{c['name']}:latest": c for c in cards}


def _row_ids(page) -> list[str]:
    return page.eval_on_selector_all("#catalog tbody tr", "rows => rows.map(r => r.dataset.id)")


def test_the_page_is_public_and_its_data_wants_the_key(server):
    html = httpx.get(server.url + "/", headers={"Accept": "text/html"})
    assert html.status_code == 200 and "text/html" in html.headers["content-type"] and "/ui/app.js" in html.text
    assert httpx.get(server.url + "/ui/app.js").status_code == 200
    assert httpx.get(server.url + "/api/zoo/cards").status_code == 401
    data = httpx.get(server.url + "/api/zoo/cards", headers=server.headers).json()
    assert {"tiny:latest", SPARSE50} <= {m["id"] for m in data["models"]}
    probe = httpx.get(server.url + "/", headers=server.headers)  # Ollama's probe does not ask for HTML
    assert probe.text == "zoo is running"


def test_the_table_lists_every_card_and_filters_remove_rows(page):
    expected = set(_catalog()) | {"tiny:latest", "tiny-long:latest", "tiny-wide:latest"}
    assert set(_row_ids(page)) == expected
    assert page.inner_text("#shown") == f"{len(expected)} of {len(expected)} shown"

    page.select_option("#f-bits", "4")
    four_bit = {k for k, c in _catalog().items() if (c.get("compression") or {}).get("bits") == 4}
    assert set(_row_ids(page)) == four_bit and "tiny:latest" not in four_bit
    page.fill("#f-ppl", "100")  # both at once: 4-bit and measured perplexity at most 100
    kept = {k for k in four_bit if (_catalog()[k]["metrics"].get("perplexity") or {}).get("value", 1e9) <= 100}
    assert set(_row_ids(page)) == kept and 0 < len(kept) < len(four_bit)
    page.click("#filters button[type=reset]")
    page.wait_for_function(f"document.querySelectorAll('#catalog tbody tr').length === {len(expected)}")


def test_a_card_shows_its_recipe_and_where_it_was_measured(page):
    card = _catalog()[SPARSE50]
    page.click(f"#catalog tbody tr[data-id='{SPARSE50}']")
    panel = page.locator("#card")
    panel.wait_for(state="visible")
    assert page.url.endswith("#card=" + SPARSE50.replace(":", "%3A"))
    recipe = page.inner_text("#card .recipe")
    assert card["recipe"]["base"]["pypi"]["package"] in recipe and card["recipe"]["compress"]["method"] in recipe
    text = panel.inner_text()
    assert card["metrics"]["decode_tps"]["machine"] in text and card["base_model"]["source"] in text
    calibration = card["compression"]["calibration"]
    digests = [t["sha256"] for t in calibration.get("texts", [])] or [calibration["sha256"]]  # one text or several
    assert card["files"][0]["sha256"] in text and all(d in text for d in digests)
    page.click("#card-close")
    panel.wait_for(state="hidden")


def test_the_charts_draw_every_measured_point_and_mark_the_pareto_front(page, server):
    api = httpx.get(server.url + "/api/zoo/cards", headers=server.headers).json()
    (smol,) = [b for b in api["charts"] if b["base_model"] == SMOL]
    measured = {k for k, c in _catalog().items()
                if (c["metrics"].get("perplexity") or {}).get("value") and c["base_model"]["name"] == SMOL}
    for chart in smol["charts"]:
        selector = f"svg.chart[data-base='{SMOL}'][data-chart='{chart['id']}']"
        drawn = page.eval_on_selector_all(f"{selector} circle.point", "cs => cs.map(c => c.dataset.id)")
        front = page.eval_on_selector_all(f"{selector} circle.point.front", "cs => cs.map(c => c.dataset.id)")
        assert set(drawn) == measured
        # every point can be on the front (each faster card measured worse): the page marks what the API computed
        assert set(front) == {p["id"] for p in chart["points"] if p["front"]} and 0 < len(front) <= len(drawn)
        assert page.locator(f"{selector} polyline.pareto-line").count() == 1


def test_a_chat_round_trip_streams_the_answer_into_the_page(page, local):
    prompt, max_tokens = "hello there", 10
    _, expected = local(prompt, max_tokens, temperature=0)
    page.wait_for_function("document.querySelector('#chat-model option[value=\"tiny:latest\"]') !== null")
    page.select_option("#chat-model", "tiny:latest")
    page.fill("#chat-temperature", "0")
    page.fill("#chat-max", str(max_tokens))
    page.evaluate("""() => {  // every text the answer shows on its way: streamed, not one block
        window.seen = [];
        new MutationObserver(() => {
            const answer = document.querySelector('#chat-log .msg.assistant');
            if (answer) window.seen.push(answer.textContent);
        }).observe(document.querySelector('#chat-log'), {childList: true, subtree: true, characterData: true});
    }""")
    page.fill("#chat-input", prompt)
    page.press("#chat-input", "Enter")
    page.locator("#chat-log .msg.assistant.done").wait_for()
    assert page.inner_text("#chat-log .msg.user") == prompt
    assert page.locator("#chat-log .msg.error").count() == 0
    answer = page.inner_text("#chat-log .msg.assistant")
    assert answer == expected.text and answer
    seen = [s for s in dict.fromkeys(page.evaluate("window.seen")) if s]
    assert len(seen) > 1 and all(answer.startswith(s) for s in seen), seen
