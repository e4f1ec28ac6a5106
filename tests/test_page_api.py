"""The demo page's HTTP side (issue 24): GET /rec/items, GET /demo/info, the static files and
their Content-Security-Policy. Plain HTTP through TestClient; the page in a browser is
tests/test_page_browser.py.

Search unit tests on hand-made catalogues (with keys, and ids only); the routes on the tiny
models: the keyed one (titles, a genre list) and the synthetic one (a category column, as
`data.sh synthetic` writes it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from config import Settings
from recdata.itemmap import read_item_map, render_item_map
from service.catalogue import Catalogue
from service.domain import BadQuery
from service.itemsearch import ItemSearch
from service.routes.page import CSP
from support import train_tiny_model


# ------------------------------------------------------------------ unit: the search
def _catalogue(tmp_path: Path) -> Catalogue:
    path = tmp_path / "item_map.tsv"
    path.write_bytes(render_item_map(
        ["sw", "empire", "wars-doc", "toy"],
        {"title": ["Star Wars", "The Empire Strikes Back", "Wars", "Toy Story"],
         "genre": [["Sci-Fi"], ["Sci-Fi", "War"], ["Documentary"], ["Comedy"]]}, ["genre"]))
    return Catalogue(read_item_map(path), item_count=5)


def test_search_ranks_exact_then_word_prefix_then_anywhere(tmp_path):
    s = ItemSearch(_catalogue(tmp_path))
    # "wars": id 3's title is exactly it, id 1's title has the word, id 3's key too.
    assert [i["id"] for i in s.search("Wars", 10)] == [3, 1]
    assert [i["id"] for i in s.search("ar", 10)] == [1, 2, 3]  # anywhere: by id
    assert [i["id"] for i in s.search("sci-fi", 10)] == [1, 2]  # a genre is exact
    assert [i["id"] for i in s.search("EMP", 10)] == [2]  # key prefix, any case
    assert s.search("zzz", 10) == []
    assert len(s.search("s", 2)) == 2
    (toy,) = s.search("toy story", 5)
    assert toy == {"item": "toy", "id": 4, "title": "Toy Story", "genre": ["Comedy"]}


def test_the_selector_offers_the_list_column_by_item_count(tmp_path):
    s = ItemSearch(_catalogue(tmp_path))
    assert s.filter_field == ("genre", ["Sci-Fi", "Comedy", "Documentary", "War"])
    assert s.name_column == "title"


def test_without_a_map_the_search_is_by_id():
    s = ItemSearch(Catalogue(None, item_count=130))
    assert [i["item"] for i in s.search("12", 20)] == [12, 120, 121, 122, 123, 124, 125, 126,
                                                       127, 128, 129]
    assert [i["item"] for i in s.search("1", 5)] == [1, 10, 11, 12, 13]
    assert s.search("0", 5) == [] and s.search("130", 5) == []
    assert s.search(" 7 ", 5) == [{"item": 7, "id": 7}, {"item": 70, "id": 70},
                                  {"item": 71, "id": 71}, {"item": 72, "id": 72},
                                  {"item": 73, "id": 73}]
    with pytest.raises(BadQuery, match="no item keys or titles.*search by item id"):
        s.search("Star", 5)
    assert s.filter_field is None and s.name_column is None


# ------------------------------------------------------------------ the routes, through HTTP
@contextlib.contextmanager
def _client(model: tuple[Path, int], tmp_path_factory, **env: str) -> Iterator[TestClient]:
    import main

    db = tmp_path_factory.mktemp("page") / "items.db"
    settings = Settings.from_env({"MODEL_CONFIG_PATH": str(model[0]), "MILVUS_URI": str(db),
                                  "MAX_TOP_K": "100", **env})
    with TestClient(main.create_app(settings)) as c:
        yield c


def drop_item_map(data: Path) -> None:
    (data / "item_map.tsv").unlink()


@pytest.fixture(scope="session")
def ids_only_model(tmp_path_factory) -> tuple[Path, int]:
    """The tiny synthetic model trained on data without an item map: ids are the only names."""
    return train_tiny_model(tmp_path_factory.getbasetemp() / "ids_only_model", drop_item_map)


@pytest.fixture(scope="module")
def keyed(keyed_model, tmp_path_factory) -> Iterator[TestClient]:
    with _client(keyed_model, tmp_path_factory) as c:
        yield c


@pytest.fixture(scope="module")
def synthetic(tiny_model, tmp_path_factory) -> Iterator[TestClient]:
    with _client(tiny_model, tmp_path_factory) as c:
        yield c


def test_items_finds_titles_and_keys_as_recall_takes_them(keyed):
    r = keyed.get("/rec/items", params={"q": "product 12", "limit": 5})
    assert r.status_code == 200, r.text
    found = r.json()
    assert found[0] == {"item": "SKU-0012", "id": 12, "title": "Product 12",
                        "genre": found[0]["genre"]}
    assert [i["id"] for i in found] == [12, 120, 121, 122, 123]
    assert keyed.get("/rec/items", params={"q": "sku-0250"}).json()[0]["id"] == 250
    assert keyed.get("/rec/items", params={"q": "no such thing"}).json() == []
    # What it answers is what /rec/recall takes: keys.
    keys = [i["item"] for i in found[:3]]
    assert keyed.post("/rec/recall", json={"hist_item": [keys], "top_k": 5}).status_code in (
        200, 409)


def test_items_on_the_synthetic_catalogue_searches_its_category_names(synthetic):
    info = synthetic.get("/demo/info").json()
    assert info["keys"] is True and info["filter"]["field"] == "category"
    name = info["filter"]["values"][0]
    found = synthetic.get("/rec/items", params={"q": name, "limit": 100}).json()
    assert found and all(i["category"].startswith(name) for i in found[:5])
    assert info["interests"] >= 1 and info["items"] > 0 and info["name_field"] == "title"


@pytest.mark.parametrize("params, message", [
    ({}, "query.q: is required"),
    ({"q": ""}, "query.q: String should have at least 1 character"),
    ({"q": "   "}, "query.q: must not be blank"),
    ({"q": "x" * 513}, "query.q: String should have at most 512"),
    ({"q": "a", "limit": "0"}, "query.limit: must be >= 1, got 0"),
    ({"q": "a", "limit": "101"}, "query.limit: must be <= 100, got 101"),
    ({"q": "a", "limit": "ten"}, "query.limit: must be an integer, got string"),
    ({"q": "a", "top_k": "3"}, "query.top_k: is not a known parameter (q, limit)"),
    ([("q", "a"), ("q", "b")], "query.q: is given more than once; give it once"),
    ([("q", "a"), ("limit", "3"), ("limit", "4")], "query.limit: is given more than once"),
])
def test_items_refuses_bad_queries_with_a_message(keyed, params, message):
    r = keyed.get("/rec/items", params=params)
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"], r.json()


def test_items_is_read_only(keyed):
    assert keyed.post("/rec/items", params={"q": "a"}).status_code == 405


def test_the_page_and_its_files_carry_the_csp(keyed):
    root = keyed.get("/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "demo"
    page = keyed.get("/demo")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    # No inline script or style: everything the page runs comes from its own files.
    assert '<script src="demo/static/page.js"' in html and "<style" not in html
    assert "style=" not in html and "onclick" not in html.lower()
    for path, kind in [("/demo", "text/html"), ("/demo/static/page.js", "text/javascript"),
                       ("/demo/static/page.css", "text/css"), ("/demo/info", "application/json"),
                       ("/rec/items?q=a", "application/json")]:
        r = keyed.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith(kind), path
        assert r.headers["content-security-policy"] == CSP, path
        assert r.headers["x-content-type-options"] == "nosniff", path
    assert "script-src 'self'" in CSP and "default-src 'none'" in CSP and "http" not in CSP
    missing = keyed.get("/demo/static/..%2Fpage.py")
    assert missing.status_code == 404
    assert keyed.get("/demo/static/index.html").status_code == 404  # only the listed files


def test_the_page_calls_no_mutating_endpoint():
    js = (Path(__file__).resolve().parents[1] / "recommend/service/static/page.js").read_text()
    for path in ("insert_data", "/drop", "rec/count"):
        assert f'"{path}' not in js and f"`{path}" not in js and f"'{path}" not in js
    assert js.count("fetch(") == 1 and 'method: "POST"' in js and js.count('"rec/recall"') == 1


def test_info_says_what_the_page_needs(keyed, keyed_model):
    info = keyed.get("/demo/info").json()
    assert info["keys"] is True and info["items"] == keyed_model[1] - 1
    assert info["filter"]["field"] == "genre" and "Classic" in info["filter"]["values"]
    assert info["max_top_k"] == 100 and info["name_field"] == "title"


def test_a_model_without_an_item_map_is_searched_by_id(ids_only_model, tmp_path_factory):
    with _client(ids_only_model, tmp_path_factory) as c:
        info = c.get("/demo/info").json()
        assert info["keys"] is False and info["filter"] is None and info["name_field"] is None
        assert c.get("/rec/items", params={"q": "12", "limit": 3}).json() == [
            {"item": 12, "id": 12}, {"item": 120, "id": 120}, {"item": 121, "id": 121}]
        r = c.get("/rec/items", params={"q": "Product 12"})
        assert r.status_code == 422
        assert r.json()["detail"] == ("query.q: this model has no item keys or titles (its data "
                                      "had no item_map.tsv): search by item id (digits)")
