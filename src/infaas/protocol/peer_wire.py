"""The request wire between frontends and Ray worker actors: authenticated, and safe to decode.

A Ray actor's request listener is reachable from the cluster's network, so nothing read from it may
run code, and nobody without the deployment's secret may send it a frame.

Handshake (before any frame is read, both ways, HMAC-SHA256 with the shared secret):

    listener -> client   MAGIC (8 bytes) | listener nonce (32)
    client -> listener   client nonce (32) | HMAC(secret, "client" | listener nonce | client nonce)
    listener -> client   HMAC(secret, "server" | client nonce | listener nonce)

A peer that fails it is disconnected; the listener counts it. The secret never crosses the wire and a
recorded handshake cannot be replayed (fresh nonces each side).

Frames (little endian): ``u32 header_len | u64 body_len | header | body``. The header is JSON: the
message with each numpy array replaced by ``{"$nd": [dtype, shape, nbytes]}``; the body is the arrays'
bytes, in the header's order. Both lengths are checked against limits before anything is allocated;
dtypes come from a fixed list of plain numeric types (and BYTES, length-prefixed elements); every array's
size is computed from its shape and must match. A frame that breaks any rule raises :class:`WireError`
and its connection is closed. There is no pickle on this wire.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import os
import secrets
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from infaas.errors import InvalidInput
from infaas.protocol.codec import decode_bytes_tensor, encode_bytes_tensor

MAGIC = b"INFAASW1"
_NONCE = 32
_MAC = 32
_PREFIX = struct.Struct("<IQ")
MAX_HEADER_BYTES = 1 << 20
MAX_ARRAYS = 4096
MAX_DIMS = 32
_DTYPES = frozenset({"|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8"})
_BYTES = "BYTES"
_TAG = "$nd"

log = logging.getLogger("infaas.wire")


class WireError(ValueError):
    """A frame that breaks the format's rules (its connection is closed)."""


class WireRefused(ConnectionError):
    """The peer failed the handshake: it does not hold the deployment's secret."""


def new_secret() -> str:
    return secrets.token_hex(32)


def _mac(secret: bytes, label: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(secret, label + first + second, hashlib.sha256).digest()


async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secret: bytes, timeout_s: float) -> None:
    """The listener's side of the handshake; raises :class:`WireRefused` (or a timeout) on failure."""
    mine = os.urandom(_NONCE)
    writer.write(MAGIC + mine)
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.readexactly(_NONCE + _MAC), timeout_s)
    except (asyncio.IncompleteReadError, TimeoutError) as exc:
        raise WireRefused(f"no handshake within {timeout_s:g} s") from exc
    theirs, proof = answer[:_NONCE], answer[_NONCE:]
    if not hmac.compare_digest(proof, _mac(secret, b"client", mine, theirs)):
        raise WireRefused("handshake proof does not match this deployment's secret")
    writer.write(_mac(secret, b"server", theirs, mine))
    await writer.drain()


async def connect(
    host: str, port: int, secret: bytes, timeout_s: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open an authenticated connection to a listener (both sides prove they hold ``secret``)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    try:
        hello = await asyncio.wait_for(reader.readexactly(len(MAGIC) + _NONCE), timeout_s)
        if hello[: len(MAGIC)] != MAGIC:
            raise WireRefused(f"{host}:{port} is not an infaas worker listener")
        theirs, mine = hello[len(MAGIC) :], os.urandom(_NONCE)
        writer.write(mine + _mac(secret, b"client", theirs, mine))
        await writer.drain()
        try:
            proof = await asyncio.wait_for(reader.readexactly(_MAC), timeout_s)
        except asyncio.IncompleteReadError:
            raise WireRefused(f"{host}:{port} hung up during the handshake (not this deployment's secret?)") from None
        if not hmac.compare_digest(proof, _mac(secret, b"server", mine, theirs)):
            raise WireRefused(f"{host}:{port} does not hold this deployment's secret")
    except BaseException:
        writer.close()
        raise
    return reader, writer


# ---- frames -------------------------------------------------------------------------------------------
def encode(message: dict) -> list:
    """The frame's parts (prefix, header, then each array's memory, uncopied)."""
    arrays: list[memoryview] = []

    def swap(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [swap(v) for v in value]
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                raw = memoryview(encode_bytes_tensor(value))
                arrays.append(raw)
                return {_TAG: [_BYTES, list(value.shape), raw.nbytes]}
            flat = np.ascontiguousarray(value).reshape(-1)
            if flat.dtype.str not in _DTYPES:
                raise WireError(f"dtype {value.dtype} cannot travel on the worker wire")
            raw = memoryview(flat.view(np.uint8))
            arrays.append(raw)
            return {_TAG: [flat.dtype.str, list(value.shape), raw.nbytes]}
        if isinstance(value, np.generic):
            return value.item()
        return value

    header = orjson.dumps(swap(message))
    body = sum(a.nbytes for a in arrays)
    return [_PREFIX.pack(len(header), body), header, *arrays]


class Frames:
    """Reads and writes frames on one asyncio stream, with the limits checked before allocation."""

    def __init__(self, max_body_bytes: int) -> None:
        self.max_body_bytes = max_body_bytes

    def write(self, writer: asyncio.StreamWriter, message: dict) -> None:
        writer.writelines(encode(message))

    async def read(self, reader: asyncio.StreamReader) -> dict:
        """One message; ``asyncio.IncompleteReadError`` at EOF, :class:`WireError` for a bad frame."""
        header_len, body_len = _PREFIX.unpack(await reader.readexactly(_PREFIX.size))
        if header_len > MAX_HEADER_BYTES:
            raise WireError(f"frame header of {header_len} bytes, over the limit of {MAX_HEADER_BYTES}")
        if body_len > self.max_body_bytes:
            raise WireError(f"frame body of {body_len} bytes, over the limit of {self.max_body_bytes}")
        header = await reader.readexactly(header_len)
        try:
            message = orjson.loads(header)
        except orjson.JSONDecodeError as exc:
            raise WireError(f"frame header is not JSON: {exc}") from None
        if not isinstance(message, dict):
            raise WireError("frame header is not a JSON object")
        specs: list[tuple[str, tuple[int, ...], int]] = []
        _collect(message, specs, 0)
        if sum(n for _, _, n in specs) != body_len:
            raise WireError(f"frame body of {body_len} bytes, its arrays declare {sum(n for _, _, n in specs)}")
        body = bytearray(await reader.readexactly(body_len)) if body_len else bytearray()
        arrays = iter(_arrays(memoryview(body), specs))
        return _restore(message, arrays)


def _array_spec(raw: Any) -> tuple[str, tuple[int, ...], int]:
    if not (isinstance(raw, list) and len(raw) == 3):
        raise WireError(f"array descriptor {raw!r:.80} is not [dtype, shape, nbytes]")
    dtype, shape, nbytes = raw
    if dtype != _BYTES and dtype not in _DTYPES:
        raise WireError(f"dtype {dtype!r:.40} is not allowed on the worker wire")
    if not (isinstance(shape, list) and len(shape) <= MAX_DIMS):
        raise WireError("array shape must be a list of at most 32 dimensions")
    if not all(type(d) is int and d >= 0 for d in shape) or type(nbytes) is not int or nbytes < 0:
        raise WireError("array shape and size must be non-negative integers")
    count = math.prod(shape)
    if dtype == _BYTES:
        if nbytes < 4 * count:
            raise WireError(f"{nbytes} bytes cannot hold {count} BYTES elements")
    elif nbytes != count * np.dtype(dtype).itemsize:
        raise WireError(f"array of shape {shape} and dtype {dtype} declares {nbytes} bytes")
    return dtype, tuple(shape), nbytes


def _is_array(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and _TAG in value


def _collect(value: Any, specs: list, depth: int) -> None:
    if depth > 16:
        raise WireError("frame header nests too deep")
    if _is_array(value):
        if len(specs) >= MAX_ARRAYS:
            raise WireError(f"more than {MAX_ARRAYS} arrays in one frame")
        specs.append(_array_spec(value[_TAG]))
    elif isinstance(value, dict):
        for v in value.values():
            _collect(v, specs, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _collect(v, specs, depth + 1)


def _arrays(body: memoryview, specs: list[tuple[str, tuple[int, ...], int]]) -> list[np.ndarray]:
    out, pos = [], 0
    for dtype, shape, nbytes in specs:
        chunk = body[pos : pos + nbytes]
        pos += nbytes
        if dtype == _BYTES:
            try:
                out.append(decode_bytes_tensor(chunk, math.prod(shape), "wire").reshape(shape))
            except InvalidInput as exc:
                raise WireError(exc.message) from None
        else:
            out.append(np.frombuffer(chunk, dtype=np.dtype(dtype)).reshape(shape))
    return out


def _restore(value: Any, arrays: Any) -> Any:
    if _is_array(value):
        return next(arrays)
    if isinstance(value, dict):
        return {k: _restore(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v, arrays) for v in value]
    return value


# ---- the listener -------------------------------------------------------------------------------------
Session = Callable[[asyncio.StreamWriter], Callable[[dict], None]]


class Listener:
    """A TCP listener for authenticated peers: each connection passes the handshake, then every frame
    goes to that connection's session (``session(writer)`` returns the per-message callback). A peer
    that fails the handshake, or sends a frame that breaks the rules, is disconnected and counted;
    the other connections keep being served."""

    def __init__(self, secret: bytes, session: Session, *, max_body_bytes: int, handshake_s: float = 5.0) -> None:
        self.secret = secret
        self.session = session
        self.frames = Frames(max_body_bytes)
        self.handshake_s = handshake_s
        self.server: asyncio.Server | None = None
        self.counts = {"connections": 0, "refused": 0, "rejected": 0}

    async def start(self, host: str, ports: tuple[int, int] = (0, 0)) -> int:
        """Listen on ``host`` at the first free port of ``ports`` (``(0, 0)``: any); returns the port."""
        low, high = ports
        for port in range(low, high + 1) if low else [0]:
            try:
                self.server = await asyncio.start_server(self._connection, host=host, port=port)
            except OSError:
                continue
            return self.server.sockets[0].getsockname()[1]
        raise OSError(f"no free port in {low}-{high} on {host} for the worker's request listener")

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            await accept(reader, writer, self.secret, self.handshake_s)
        except (WireRefused, ConnectionError, OSError) as exc:
            self.counts["refused"] += 1
            log.warning("worker listener: refused %s: %s", peer, exc)
            writer.close()
            return
        self.counts["connections"] += 1
        on_message = self.session(writer)
        try:
            while True:
                on_message(await self.frames.read(reader))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except WireError as exc:
            self.counts["rejected"] += 1
            log.warning("worker listener: closed the connection from %s: %s", peer, exc)
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
