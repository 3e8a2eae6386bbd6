"""The catalog web page's routes: the page at `/` for browsers, its assets under `/ui/`, its data at
`GET /api/zoo/cards`.

The page and its assets are package files holding no data, so browsers get them without a key; the data
and every API route keep the `--api-key` check (the page asks for the key and sends it as a Bearer
token). Clients that do not ask for HTML (Ollama's probe of `/`) still get "zoo is running", key-checked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.staticfiles import StaticFiles

from .cards_page import gather

PAGE_PACKAGE = ("zoo.serve", "page")  # zoo/serve/page/: index.html, app.js, style.css (package data)
ASSETS_PATH = "/ui"

router = APIRouter()


@router.get("/api/zoo/cards")
def cards(request: Request) -> dict:
    """Every card the server knows, shaped for the page (zoo.serve.cards_page)."""
    return gather(request.app.state.manager)


def assets() -> StaticFiles:
    """The page's files, served from the installed package."""
    return StaticFiles(packages=[PAGE_PACKAGE])


def front_door(check_key: Callable[[Request], Awaitable[None]]) -> Callable[[Request], Awaitable[Response]]:
    """The `/` endpoint: the page for a browser (Accept: text/html), else the key-checked probe answer."""
    index = assets().lookup_path("index.html")[0]

    async def root(request: Request) -> Response:
        if "text/html" in request.headers.get("accept", ""):
            return FileResponse(index, media_type="text/html")
        await check_key(request)
        return PlainTextResponse("zoo is running")

    return root
