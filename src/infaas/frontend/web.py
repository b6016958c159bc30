"""What every REST endpoint shares: reading bodies within limits (size, gzip / deflate, .npz
members), JSON and KServe v2 error responses, the guard (API key, errors to status codes)."""

from __future__ import annotations

import asyncio
import io
import logging
import math
import time
import zipfile
import zlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from infaas.errors import InfaasError, InvalidInput, TooLarge, Unavailable
from infaas.frontend.auth import authorize
from infaas.serving.door import accepted_status

if TYPE_CHECKING:
    from infaas.app.services import Services
    from infaas.serving.door import Door

log = logging.getLogger("infaas.rest")

Handler = Callable[[Request], Awaitable[Response]]


def services_of(request: Request) -> Services:
    return request.app.state.services


def json_response(obj, status: int = 200) -> Response:
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json")


def error_response(message: str, status: int, retry_after_s: float | None = None) -> Response:
    response = json_response({"error": message}, status)
    if retry_after_s is not None:  # whole seconds (RFC 9110), at least 1
        response.headers["retry-after"] = str(max(1, math.ceil(retry_after_s)))
    return response


def guard(fn: Handler, keys: tuple[str, ...] = ()) -> Handler:
    """Checks the bearer token when ``keys`` are set; every infaas error becomes a v2 error body with
    its status (and Retry-After when it has one); anything else a 500."""

    async def wrapped(request: Request) -> Response:
        try:
            if keys:
                authorize(request.headers.get("authorization", ""), keys)
            return await fn(request)
        except InfaasError as exc:
            return error_response(exc.message, exc.status, exc.retry_after_s)
        except Exception as exc:  # the server keeps serving
            log.exception("unhandled error on %s", request.url.path)
            return error_response(f"internal error: {type(exc).__name__}: {exc}", 500)

    return wrapped


class DoorMiddleware:
    """The REST app's outermost layer: every request's arrival time, taken before its body is read
    (``request.state.arrival``), and admission of inference requests at the door
    (:mod:`infaas.serving.door`): refused at once, body unread, when the frontend itself is overloaded
    or the model's workers refuse part of what reaches them; each answer's status, and its queue wait
    (``request.state.passage``, filled in by the handler), tell the model's throttle how its workers
    are doing."""

    def __init__(self, app, door: Door) -> None:
        self.app = app
        self.door = door

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        scope.setdefault("state", {})["arrival"] = now
        if scope["method"] != "POST" or not scope["path"].endswith("/infer"):  # health, metadata: always answered
            await self.app(scope, receive, send)
            return
        parts = scope["path"].split("/")  # /v2/models/{name}[/versions/{version}]/infer
        model = parts[3] if len(parts) > 4 else ""
        try:
            passage = self.door.enter(now, model)
        except Unavailable as exc:  # refused at the door, body unread
            await error_response(exc.message, exc.status, exc.retry_after_s)(scope, receive, send)
            return
        scope["state"]["passage"] = passage  # the handler notes what the workers said of it
        status = 500

        async def sent(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            self.door.leave(model, accepted_status(status), passage)


def arrival_of(request: Request) -> float:
    """When the door saw ``request`` (now, for an app built without the door)."""
    return request.scope.get("state", {}).get("arrival") or time.monotonic()


async def read_body(request: Request, limit: int) -> bytes:
    """The body, read within ``limit`` bytes, decompressed (gzip / deflate) within ``limit`` too,
    as the chunks arrive: a compression bomb stops at the limit, never past it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
    encoding = request.headers.get("content-encoding", "").lower().strip()
    if encoding not in ("", "identity", "gzip", "deflate"):
        raise InvalidInput(f"unsupported content-encoding {encoding!r}")
    inflate = None
    if encoding in ("gzip", "deflate"):
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    chunks, size, raw = [], 0, 0
    try:
        async for chunk in request.stream():
            raw += len(chunk)
            if raw > limit:
                raise TooLarge(f"request body exceeds the limit of {limit} bytes")
            if inflate is not None:
                chunk = inflate.decompress(chunk, limit + 1 - size)
                if inflate.unconsumed_tail:
                    raise TooLarge(f"{encoding} body inflates past the limit of {limit} bytes")
            size += len(chunk)
            if size > limit:
                raise TooLarge(
                    f"request body exceeds the limit of {limit} bytes"
                    + (" once decompressed" if inflate is not None else "")
                )
            chunks.append(chunk)
        if inflate is not None:
            tail = inflate.flush()
            if size + len(tail) > limit:
                raise TooLarge(f"{encoding} body inflates past the limit of {limit} bytes")
            chunks.append(tail)
            if not inflate.eof:
                raise InvalidInput(f"body is not valid {encoding}: the stream is truncated")
    except zlib.error as exc:
        raise InvalidInput(f"body is not valid {encoding}: {exc}") from None
    return b"".join(chunks)


def replay(body: bytes):
    """An ASGI receive callable that hands out an already-read body (for Starlette's form parser)."""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # no more messages: as a client that waits
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def read_npz(body: bytes, limit: int) -> dict[str, np.ndarray]:
    """Arrays of an .npz body, refusing members whose declared uncompressed sizes exceed ``limit``
    in all (zipfile never inflates a member past its declared size) and anything pickled."""
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            total = sum(i.file_size for i in zf.infolist())
        if total > limit:
            raise TooLarge(f".npz members inflate to {total} bytes, over the limit of {limit}")
        with np.load(io.BytesIO(body), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except InfaasError:
        raise
    except Exception as exc:
        raise InvalidInput(f"body is not a readable .npz: {exc}") from None
