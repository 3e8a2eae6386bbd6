"""The ASGI application: the OpenAI and Ollama routers, the API key check, and errors in each API's shape.

OpenAI's routes (/v1/...) answer errors as {"error": {"message", "type", "code"}}; Ollama's (everything
else) as {"error": "..."}. Bad parameters are 400 (FastAPI's 422 is turned into 400, as both APIs do),
and no response ever carries a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from zoo import __version__
from zoo.errors import ZooError

from . import ollama_api, openai_api, page_routes
from .errors import ApiError, ErrorCode, failure
from .manager import ModelManager
from .streaming import warm_streaming


def error_response(request: Request, err: ApiError) -> JSONResponse:
    """The error body of the API the request went to."""
    if request.url.path.startswith("/v1/"):
        body = {"error": {"message": str(err), "type": err.code.openai_type, "param": None, "code": err.code.value}}
    else:
        body = {"error": str(err)}
    headers = {"WWW-Authenticate": "Bearer"} if err.code is ErrorCode.UNAUTHORIZED else None
    return JSONResponse(body, status_code=err.code.status, headers=headers)


def _validation_message(err: RequestValidationError) -> str:
    """One line from pydantic's errors: 'temperature: Input should be less than or equal to 2; ...'."""
    parts = []
    for e in err.errors()[:3]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
    return "invalid request: " + "; ".join(parts)


class JsonBody:
    """ASGI middleware: read every POST body as JSON whatever its Content-Type, as Ollama does (its own docs
    post with `curl -d '{...}'`, which says application/x-www-form-urlencoded)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": headers + [(b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


def create_app(manager: ModelManager, api_key: str | None = None) -> FastAPI:
    """The server's app over `manager`; with `api_key`, every route wants `Authorization: Bearer <key>`."""

    async def check_key(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), api_key.encode()):
            raise ApiError(ErrorCode.UNAUTHORIZED, "invalid or missing API key (send Authorization: Bearer <key>)")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await warm_streaming()
        reaper = asyncio.create_task(manager.reaper())
        try:
            yield
        finally:
            reaper.cancel()

    app = FastAPI(title="zoo", version=__version__, lifespan=lifespan, dependencies=[Depends(check_key)],
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.manager = manager
    app.add_middleware(JsonBody)
    app.include_router(openai_api.router)
    app.include_router(ollama_api.router)

    app.include_router(page_routes.router)
    app.add_route("/", page_routes.front_door(check_key), methods=["GET", "HEAD"])  # the page needs no key
    app.mount(page_routes.ASSETS_PATH, page_routes.assets(), name="page")  # package files, no key

    @app.exception_handler(ZooError)
    async def on_zoo_error(request: Request, err: ZooError):
        return error_response(request, failure(err))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, err: RequestValidationError):
        return error_response(request, ApiError(ErrorCode.BAD_REQUEST, _validation_message(err)))

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, err: HTTPException):
        code = ErrorCode.NO_ROUTE if err.status_code == 404 else ErrorCode.BAD_REQUEST
        response = error_response(request, ApiError(code, f"{request.method} {request.url.path}: {err.detail}"))
        response.status_code = err.status_code
        return response

    @app.exception_handler(ClientDisconnect)
    async def on_gone(request: Request, err: ClientDisconnect):
        return PlainTextResponse("", status_code=499)  # nobody reads it: the client left (not a server error)

    @app.exception_handler(Exception)
    async def on_bug(request: Request, err: Exception):
        return error_response(request, failure(err))

    return app
