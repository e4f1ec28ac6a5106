"""The demo page in a real browser (issue 24): Debian's headless Chromium driven by Selenium
through Debian's chromedriver, against a real `uvicorn main:app` on the tiny keyed model.

    apt-get install -y chromium chromium-driver      # the browser; nothing is downloaded
    .venv/bin/python -m pytest -q tests/test_page_browser.py

Without the browser these tests skip, saying so, unless REQUIRE_BROWSER=1 (.ci/run sets it):
then they fail. The README's screenshot comes from the same tooling:

    .venv/bin/python tests/test_page_browser.py --config recommend/model/mind/config_movielens.yaml \\
        --search "star wars" --search "fargo" --search "toy story" --out docs/page.png
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

if __name__ == "__main__":  # run as a script (the screenshot): pytest's paths by hand
    sys.path[:0] = [str(Path(__file__).resolve().parent),
                    str(Path(__file__).resolve().parents[1] / "recommend")]
from reliability_support import Service, free_port  # noqa: E402
from test_page_api import ids_only_model  # noqa: E402, F401  (a fixture)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver"
WAIT = 30  # seconds for anything the page does (a recall of the tiny model takes ~50 ms)


@contextlib.contextmanager
def service(config: Path, tmp: Path, insert: bool, **env: str) -> Iterator[Service]:
    """`uvicorn main:app` on a free loopback port, its items loaded when ``insert``."""
    s = Service(tmp, {"MODEL_CONFIG_PATH": str(config), "MILVUS_URI": str(tmp / "items.db"),
                      **env})
    s.start()
    try:
        if insert:
            r = httpx.post(f"{s.base}/rec/insert_data", timeout=300)
            assert r.status_code == 200, r.text
        yield s
    finally:
        s.stop()


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is missing: {INSTALL}"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -r requirements-dev.txt"
    return None


def open_browser(width: int = 1500, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Both paths given: Selenium Manager has nothing to look up or download.
    return webdriver.Chrome(options=options, service=DriverService(CHROMEDRIVER))


@pytest.fixture(scope="module")
def browser():
    reason = browser_missing()
    if reason:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    driver = open_browser()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def loaded(keyed_model, tmp_path_factory) -> Iterator[Service]:
    with service(keyed_model[0], tmp_path_factory.mktemp("page_loaded"), insert=True) as s:
        yield s


@pytest.fixture(scope="module")
def empty(keyed_model, tmp_path_factory) -> Iterator[Service]:
    with service(keyed_model[0], tmp_path_factory.mktemp("page_empty"), insert=False) as s:
        yield s


# ------------------------------------------------------------------ driving the page
def wait_for(driver, what, timeout: float = WAIT):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: what(d))


def css(driver, selector: str) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def open_page(driver, base: str) -> None:
    driver.get(f"{base}/demo")
    driver.execute_script("localStorage.clear()")
    driver.get(f"{base}/")  # the link from / to the page
    wait_for(driver, lambda d: d.execute_script("return document.body.dataset.ready") == "1")


def type_into_search(driver, text: str) -> None:
    box = css(driver, "#search")[0]
    box.clear()
    box.send_keys(text)


def add_from_search(driver, text: str, item: str | None = None) -> str:
    """Type ``text``; add the result naming ``item`` (default: the first). Returns its item."""
    type_into_search(driver, text)
    # The list answering this very text (data-q), not an earlier one still on screen.
    found = f'#found[data-q="{text.strip()}"]'
    want = f'{found} li[data-item="{item}"] button' if item else f"{found} li button"
    wait_for(driver, lambda d: css(d, want))
    button = css(driver, want)[0]
    chosen = button.find_element("xpath", "..").get_attribute("data-item")
    button.click()
    wait_for(driver, lambda d: chosen in history_of(d))
    return chosen


def history_of(driver) -> list[str]:
    return [li.get_attribute("data-item") for li in css(driver, "#history li")]


def recall_and_wait(driver) -> str:
    css(driver, "#recall")[0].click()
    return wait_for(driver, lambda d: (s := css(d, "#status")[0].get_attribute("data-state"))
                    not in (None, "", "loading") and s)


def columns_of(driver) -> dict[str, list[tuple[str, str]]]:
    """Each column (data-interest) as [(item, score text)] in the page's order."""
    return {col.get_attribute("data-interest"): [
        (li.get_attribute("data-item"), li.find_element("css selector", ".score").text)
        for li in col.find_elements("css selector", "li")]
        for col in css(driver, "#columns .column")}


def expected_columns(answer: list[dict[str, Any]], interests: int) -> dict[str, list[str]]:
    """The columns the page should show for ``answer``, items as the page's data-item (text)."""
    cols = {str(k): [str(i["item"]) for i in answer if i["interest"] == k]
            for k in range(interests)}
    popular = [str(i["item"]) for i in answer if i["interest"] is None]
    if popular:
        cols["popular"] = popular
    cols["merged"] = [str(i["item"]) for i in answer]
    return cols


def check_against_the_api(driver, base: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The page's columns hold exactly what the API answers to the same request."""
    answer = httpx.post(f"{base}/rec/recall", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    (row,) = answer.json()
    interests = httpx.get(f"{base}/demo/info").json()["interests"]
    shown = columns_of(driver)
    assert {k: [i for i, _ in v] for k, v in shown.items()} == expected_columns(row, interests)
    scores = {str(i["item"]): i["score"] for i in row}
    for item, text in shown["merged"]:
        assert float(text) == pytest.approx(scores[item], abs=5e-4), item
    return row


def csp_violations(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser")
            if "Content Security Policy" in e["message"] or e["level"] == "SEVERE"]


def log_since(s: Service, offset: int) -> str:
    return s.log()[offset:]


def mutating_calls(log: str) -> list[str]:
    """uvicorn's access lines of calls that load, drop or count the collection."""
    return [line for line in log.splitlines()
            if any(f'"POST {p}' in line for p in ("/rec/insert_data", "/rec/drop", "/qa/drop",
                                                  "/rec/count"))]


# ------------------------------------------------------------------ the tests
def test_a_recall_shows_each_interests_items_as_the_api_answers(browser, loaded, tmp_path):
    start = len(loaded.log())
    open_page(browser, loaded.base)
    # Type titles, add three items, reorder one and put it back.
    keys = [add_from_search(browser, t, k) for t, k in
            [("Product 3", "SKU-0003"), ("product 17", "SKU-0017"), ("sku-0101", "SKU-0101")]]
    assert history_of(browser) == keys
    css(browser, '#history li[data-item="SKU-0101"] button.up')[0].click()
    assert history_of(browser) == ["SKU-0003", "SKU-0101", "SKU-0017"]
    css(browser, '#history li[data-item="SKU-0101"] button.down')[0].click()
    assert history_of(browser) == keys

    top = css(browser, "#topk")[0]
    top.clear()
    top.send_keys("30")
    assert recall_and_wait(browser) == "ok"
    row = check_against_the_api(browser, loaded.base,
                                {"top_k": 30, "hist_item": [keys], "return": "items"})
    assert len(row) == 30 and not {i["item"] for i in row} & set(keys)
    used = {i["interest"] for i in row}
    assert len(used) >= 2, "a 4-interest model's answer comes from several interests"
    browser.save_screenshot(str(tmp_path / "page.png"))

    # The genre selector becomes the where filter.
    from selenium.webdriver.support.ui import Select

    Select(css(browser, "#filter")[0]).select_by_value("Classic")
    assert recall_and_wait(browser) == "ok"
    row = check_against_the_api(browser, loaded.base, {
        "top_k": 30, "hist_item": [keys], "return": "items", "where": {"genre": ["Classic"]}})
    assert row and all("Classic" in i["genre"] for i in row)

    # An unknown key typed in the search box says so.
    type_into_search(browser, "SKU-9999")
    css(browser, "#search")[0].send_keys("\n")
    wait_for(browser, lambda d: css(d, "#status")[0].get_attribute("data-state") == "unknown-key")
    assert "Unknown key “SKU-9999”" in css(browser, "#status")[0].text
    assert history_of(browser) == keys

    css(browser, "#clear")[0].click()
    assert history_of(browser) == [] and not css(browser, "#recall")[0].is_enabled()
    assert csp_violations(browser) == []
    # The page read and recalled; it loaded, counted and dropped nothing.
    log = log_since(loaded, start)
    assert '"POST /rec/recall' in log and '"GET /rec/items' in log
    assert not mutating_calls(log)


def test_an_empty_collection_says_load_the_items_first(browser, empty):
    open_page(browser, empty.base)
    add_from_search(browser, "Product 5", "SKU-0005")
    assert recall_and_wait(browser) == "empty-collection"
    status = css(browser, "#status")[0].text
    assert "load the items first" in status and "/rec/insert_data" in status
    assert css(browser, "#columns .column") == []
    r = httpx.post(f"{empty.base}/rec/recall",
                   json={"top_k": 20, "hist_item": [["SKU-0005"]], "return": "items"})
    assert r.status_code == 409, r.text
    assert not mutating_calls(log_since(empty, 0))  # and the page did not load them


def test_a_milvus_outage_is_shown_as_such(browser, keyed_model, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: Milvus is down
    with service(keyed_model[0], tmp_path, insert=False, MILVUS_URI=dead,
                 MILVUS_TIMEOUT="2") as s:
        open_page(browser, s.base)
        add_from_search(browser, "Product 5", "SKU-0005")
        assert recall_and_wait(browser) == "milvus-down"
        assert "Milvus is unavailable (503)" in css(browser, "#status")[0].text


def test_a_model_without_an_item_map_works_by_ids(browser, ids_only_model, tmp_path):  # noqa: F811
    with service(ids_only_model[0], tmp_path, insert=True) as s:
        open_page(browser, s.base)
        assert "ids only" in css(browser, "#model")[0].text
        assert css(browser, "#filter-label")[0].get_attribute("hidden") is not None
        ids = [add_from_search(browser, q, q) for q in ("12", "7", "250")]
        assert recall_and_wait(browser) == "ok"
        check_against_the_api(browser, s.base, {
            "top_k": 20, "hist_item": [[int(i) for i in ids]], "return": "items"})


# ------------------------------------------------------------------ the README's screenshot
def screenshot(config: Path, searches: list[str], out: Path, top_k: int) -> None:
    """Serve ``config``'s model, add the first result of each search, recall, save the page."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, service(config, Path(tmp), insert=True) as s:
        driver = open_browser(1500, 900)
        try:
            open_page(driver, s.base)
            for text in searches:
                add_from_search(driver, text)
            top = css(driver, "#topk")[0]
            top.clear()
            top.send_keys(str(top_k))
            assert recall_and_wait(driver) == "ok"
            type_into_search(driver, searches[0])
            wait_for(driver, lambda d: css(d, f'#found[data-q="{searches[0]}"] li'))
            for _ in range(2):  # the page reflows once resized: measure again
                height, chrome = driver.execute_script(
                    "return [document.documentElement.scrollHeight, "
                    "window.outerHeight - window.innerHeight]")
                driver.set_window_size(1500, min(max(height, 700), 1600) + chrome)
            driver.save_screenshot(str(out))
        finally:
            driver.quit()
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Screenshot the demo page after a recall.")
    parser.add_argument("--config", type=Path, required=True, help="a trained model's config")
    parser.add_argument("--search", action="append", required=True,
                        help="text to search; its first result is added (repeat)")
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("docs/page.png"))
    args = parser.parse_args()
    if reason := browser_missing():
        sys.exit(reason)
    screenshot(args.config.resolve(), args.search, args.out.resolve(), args.top_k)
