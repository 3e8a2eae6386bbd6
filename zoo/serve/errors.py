"""Errors a route answers with an HTTP status; each API (OpenAI, Ollama) renders the body its own way."""

from __future__ import annotations

import logging
from enum import Enum

from zoo.errors import NotFoundError, RuntimeModelError, ZooError


class ErrorCode(str, Enum):
    """Why a request failed: picks the HTTP status and the OpenAI error `code`/`type`."""

    BAD_REQUEST = "invalid_request"
    CONTEXT = "context_length_exceeded"
    NOT_FOUND = "model_not_found"
    NO_ROUTE = "not_found"
    UNAUTHORIZED = "invalid_api_key"
    SERVER = "server_error"

    @property
    def status(self) -> int:
        return {"invalid_request": 400, "context_length_exceeded": 400, "model_not_found": 404, "not_found": 404,
                "invalid_api_key": 401}.get(self.value, 500)

    @property
    def openai_type(self) -> str:
        return "server_error" if self is ErrorCode.SERVER else "invalid_request_error"


class ApiError(ZooError):
    """A request the server refuses or cannot serve: one line of message and an ErrorCode."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def as_api_error(err: ZooError) -> ApiError:
    """The ApiError for a ZooError raised below the routes (store, runtime): unknown model 404, a request
    the runtime refuses 400, anything else (a broken artifact, a registry down) 500 with its one line."""
    if isinstance(err, ApiError):
        return err
    if isinstance(err, NotFoundError):
        return ApiError(ErrorCode.NOT_FOUND, str(err))
    if isinstance(err, RuntimeModelError):
        return ApiError(ErrorCode.BAD_REQUEST, str(err))
    return ApiError(ErrorCode.SERVER, str(err))


def failure(err: BaseException) -> ApiError:
    """as_api_error for any exception: one that is not a ZooError is a bug, logged with its traceback here
    and answered as a one-line 500 (never a traceback in a response)."""
    if isinstance(err, ZooError):
        return as_api_error(err)
    logging.getLogger("zoo.serve").error("internal error", exc_info=err)
    return ApiError(ErrorCode.SERVER, f"internal error: {type(err).__name__}: {err}")
