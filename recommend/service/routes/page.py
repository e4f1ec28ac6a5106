"""The demo page (GET /demo, linked from /) and the read-only item search it types into.

The page is three static files (service/static/) and only ever calls GET /rec/items,
GET /demo/info and POST /rec/recall: it shows what the service answers and changes nothing.
Every answer of this module carries a Content-Security-Policy that admits the page's own
origin only (no inline script or style, no other host), so a title in the catalogue can
never run as code in the page.
"""


import threading
import weakref
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from config import Settings
from service.catalogue import Catalogue
from service.deps import EngineDep
from service.domain import BadQuery
from service.itemsearch import ItemSearch
from service.schemas import MAX_KEY_LEN, ErrorResponse, ValidationErrorResponse

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
# The only files served, so no path from a request ever reaches the file system.
STATIC_FILES = {"page.js": "text/javascript", "page.css": "text/css",
                "icon.svg": "image/svg+xml"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}
ITEMS_PARAMS = frozenset({"q", "limit"})

# One search index per served catalogue, built on first use (a scan text of every item).
_searches: weakref.WeakKeyDictionary[Catalogue, ItemSearch] = weakref.WeakKeyDictionary()
_searches_lock = threading.Lock()


def search_of(catalogue: Catalogue) -> ItemSearch:
    with _searches_lock:
        got = _searches.get(catalogue)
        if got is None:
            got = _searches[catalogue] = ItemSearch(catalogue)
        return got


def _with_headers(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response


def build_router(settings: Settings) -> APIRouter:
    """The page's routes, with this service's top_k limit as the search's limit."""
    router = APIRouter(tags=["page"])

    @router.get("/", include_in_schema=False)
    def root() -> Response:
        # Relative, so the link holds behind a proxy that serves the app under a prefix.
        return _with_headers(RedirectResponse("demo", status_code=307))

    @router.get("/demo", include_in_schema=False)
    def page() -> Response:
        return _with_headers(FileResponse(STATIC_DIR / "index.html", media_type="text/html"))

    @router.get("/demo/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in STATIC_FILES:
            return _with_headers(JSONResponse({"detail": f"no static file {name!r}"}, 404))
        return _with_headers(FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name]))

    @router.get("/demo/info", include_in_schema=False)
    def info(engine: EngineDep) -> Response:
        """What the page needs to know of the served model before the first search."""
        search = search_of(engine.catalogue)
        chosen = search.filter_field
        return _with_headers(JSONResponse({
            "keys": engine.catalogue.has_keys,
            "items": engine.catalogue.item_count - 1,
            "interests": int(engine.tower.num_interests),
            "name_field": search.name_column,
            "filter": None if chosen is None else {"field": chosen[0], "values": chosen[1]},
            "max_top_k": settings.MAX_TOP_K,
            "max_history": settings.MAX_HISTORY_LEN,
        }))

    @router.get(
        "/rec/items",
        summary="Find items by title, key or metadata (read-only)",
        description=(
            "Up to `limit` items whose key or metadata contains `q` (case-insensitive): exact "
            "matches first, then a key or a word of the title starting with `q`, then the rest; "
            "ties go to the more clicked item. Each item is `{\"item\", \"id\", ...metadata}`, "
            "`item` being what /rec/recall takes in `hist_item` (the key, or the id when the "
            "model has no item map: `q` is then digits, matched against ids). Searches the "
            "model's item map in memory: it answers while the collection is empty."),
        responses={422: {"model": ValidationErrorResponse, "description": "What is wrong"},
                   404: {"model": ErrorResponse}},
    )
    def items(
        request: Request,
        engine: EngineDep,
        q: Annotated[str, Query(min_length=1, max_length=MAX_KEY_LEN,
                                description="Text to find: part of a title, key or genre")],
        limit: Annotated[int, Query(ge=1, le=settings.MAX_TOP_K,
                                    description="How many items at most")] = 20,
    ) -> Response:
        unknown = sorted(set(request.query_params) - ITEMS_PARAMS)
        if unknown:
            raise BadQuery("is not a known parameter (q, limit)", loc=f"query.{unknown[0]}")
        repeated = sorted(p for p in ITEMS_PARAMS if len(request.query_params.getlist(p)) > 1)
        if repeated:  # FastAPI would take the last one silently
            raise BadQuery("is given more than once; give it once", loc=f"query.{repeated[0]}")
        if not q.strip():
            raise BadQuery("must not be blank", loc="query.q")
        found: list[dict[str, Any]] = search_of(engine.catalogue).search(q, limit)
        return _with_headers(JSONResponse(found))

    return router
