"""The HTTP infill API (version 1, docs/serving.md) as a FastAPI app over an `InfillService`.

The app knows nothing of Ray: `make_app(service)` takes any object with an async `infill(job)`, and
`health()` / `describe()`. Serve's deployment (serving.app) is one such service, batching concurrent jobs;
`batcher.LocalService` is another, for tests. Every error has one shape, {"error": {"code", "message"}},
and none of them stops the app: a bad body costs only its own request.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from dg_lsp.engine.errors import EngineError, InfillCancelled, RequestError
from dg_lsp.serving.batcher import Job, Reply
from dg_lsp.serving.schemas import (API_VERSION, BadRequest, ErrorResponse, HealthResponse, InfillBody,
                                    InfillResponse, to_job)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
DISCONNECT_POLL_S = 0.05  # how often a running request checks that its client is still there
RETRY_AFTER_S = 5
CLIENT_CLOSED = 499  # nginx's code for a client that went away; the response goes nowhere
OPEN_PATHS = ("/v1/health", "/openapi.json")  # load balancers probe health without the token


class InfillService(Protocol):
    async def infill(self, job: Job) -> Reply:
        """The job's reply; raises the engine's error for this job (InfillCancelled once it was cancelled)."""
        ...

    def health(self) -> dict: ...

    def describe(self) -> dict: ...


def make_app(service: InfillService, *, token: str | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    app = _GatedApp(gate={"token": token, "max_body_bytes": max_body_bytes},
                    title="dg-lsp infill API", version=API_VERSION, max_body_size=max_body_bytes,
                    docs_url=None, redoc_url=None,  # their pages load scripts from a CDN; /openapi.json is the doc
                    description="Fill-in-the-middle with a diffusion LM; the contract is docs/serving.md.")
    errors = {400: {"model": ErrorResponse}, 401: {"model": ErrorResponse}, 413: {"model": ErrorResponse},
              422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}}

    @app.post("/v1/infill", response_model=InfillResponse, responses=errors)
    async def infill(body: InfillBody, request: Request) -> InfillResponse:
        received = time.perf_counter()
        if (health := service.health())["status"] != "ok":
            why = health.get("problem") or health["status"]
            raise ApiError(503, "unavailable", f"the replica cannot serve yet: {why}")
        try:
            job = to_job(body)
        except BadRequest as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        job.received = received
        reply = await _run_watching(service, job, request)
        return InfillResponse(
            middle=reply.middles[0], middles=list(reply.middles),
            tokens=[[{"text": t.text, "confidence": t.confidence} for t in hole] for hole in reply.tokens],
            steps=reply.steps, canvas_tokens=reply.canvas_tokens,
            timings={"queue_ms": reply.queue_ms, "encode_ms": reply.encode_ms, "denoise_ms": reply.denoise_ms,
                     "total_ms": (time.perf_counter() - received) * 1e3},
            model=health["model"], replica=health["replica"])

    @app.get("/v1/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    async def health() -> Any:
        body = service.health()
        return body if body["status"] == "ok" else JSONResponse(body, status_code=503,
                                                                headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.get("/v1/model", responses={401: {"model": ErrorResponse}})
    async def model() -> dict:
        return service.describe()

    _add_error_handlers(app, max_body_bytes)
    return app


async def _run_watching(service: InfillService, job: Job, request: Request) -> Reply:
    """Run the job; if the client disconnects meanwhile, cancel it so its canvas stops at the next step.

    Two ways a client's leaving shows: starlette's `is_disconnected` (uvicorn, the test client), and
    Serve cancelling this coroutine when its proxy loses the client. Both set the job's cancel flag,
    which the engine reads between denoising steps, even while this request waits in a batch."""
    task = asyncio.ensure_future(service.infill(job))
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if not task.done() and not job.is_cancelled() and await request.is_disconnected():
                log.info("client went away: cancelling its infill")
                job.cancel()
        return task.result()
    except asyncio.CancelledError:
        job.cancel()
        raise
    except InfillCancelled:
        raise ApiError(CLIENT_CLOSED, "client_closed", "the client went away; the infill was stopped") from None
    except RequestError as exc:  # e.g. longer than the model's context
        raise ApiError(400, "bad_request", str(exc)) from None
    except EngineError as exc:
        raise ApiError(400, "engine_error", str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a bug costs this request its answer, not the replica
        log.exception("infill failed")
        raise ApiError(500, "internal", f"internal error: {type(exc).__name__}: {exc}") from None


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    if status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_S), **(headers or {})}
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI, max_body_bytes: int) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, code, message = describe_validation(exc.errors())
        return error_response(status, code, message)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 413:
            return too_large(max_body_bytes)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> JSONResponse:  # a bug costs one request, not the replica
        log.exception("infill failed")
        return error_response(500, "internal", f"internal error: {type(exc).__name__}: {exc}")


def describe_validation(errors: list[dict]) -> tuple[int, str, str]:
    """(status, code, message) for FastAPI's validation errors: 400 when the body is not a JSON document,
    else 422 naming each field, the value given and what was expected."""
    for e in errors:
        if e.get("type") == "json_invalid":
            reason = e.get("ctx", {}).get("error", "decode error")
            return 400, "malformed_json", f"the body is not valid JSON: {reason} at character {e['loc'][-1]}"
        if tuple(e.get("loc", ())) == ("body",) and e.get("type") == "missing":
            return 400, "malformed_json", "the body is empty: expected a JSON object"
        if tuple(e.get("loc", ())) == ("body",) and isinstance(e.get("input"), (bytes, bytearray)):
            return 400, "malformed_json", "expected a JSON object with Content-Type: application/json"
    parts = []
    for e in errors:
        field = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        message = str(e.get("msg", "invalid"))
        if e.get("type") == "value_error":  # our own checks already name the value and what was expected
            parts.append(f"{field}: {message.removeprefix('Value error, ')}")
        elif e.get("type") == "extra_forbidden":
            parts.append(f"{field}: unknown field (value {_short(e.get('input'))}); see /openapi.json for the fields")
        elif e.get("type") == "missing":
            parts.append(f"{field}: required field is missing")
        else:
            parts.append(f"{field}: got {_short(e.get('input'))}, expected: {message.removeprefix('Input should be ')}")
    return 422, "invalid_request", "; ".join(parts)


def _short(value: Any, limit: int = 80) -> str:
    """A value as the client wrote it (JSON), cut to fit in a message."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class _GatedApp(FastAPI):
    """FastAPI with `Gate` outside its whole middleware stack. Starlette's body limiter (which FastAPI's
    max_body_size installs) answers a Content-Length over the limit in plain text from inside the stack,
    replacing whatever an inner handler sends; the gate answers first, in the API's error shape."""

    def __init__(self, *, gate: dict, **kwargs: Any) -> None:
        self.gate = gate
        super().__init__(**kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        return Gate(super().build_middleware_stack(), **self.gate)


class Gate:
    """Pure ASGI, before the body is read: every path but OPEN_PATHS needs `Authorization: Bearer
    <token>` (when a token is configured; compared in constant time), and a declared Content-Length over
    the limit is refused (a chunked body over it is stopped by FastAPI's max_body_size while it is read)."""

    def __init__(self, app: ASGIApp, token: str | None, max_body_bytes: int) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes
        self.expected = token.encode("utf-8") if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        if self.expected is not None and _route_path(scope) not in OPEN_PATHS:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("utf-8", "surrogatepass"),
                                                                     self.expected):
                what = "wrong" if scheme.lower() == "bearer" else "missing"
                response = error_response(401, "unauthorized", f"{what} token: send Authorization: Bearer <token>",
                                          headers={"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return await too_large(self.max_body_bytes)(scope, receive, send)
        await self.app(scope, receive, send)


def too_large(max_body_bytes: int) -> JSONResponse:
    return error_response(413, "body_too_large",
                          f"the request body is over the limit of {max_body_bytes} bytes (the server's max_body_bytes)")


def _route_path(scope: Scope) -> str:
    """The path below the app's mount point (Serve's route_prefix arrives as root_path)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path
