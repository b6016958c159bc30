"""Frames between the frontend and a worker process, and the worker's error replies as infaas errors.

A message is a small pickled dict whose numpy arrays travel out of band
(pickle protocol 5): the array bytes are written straight from the array's
memory and read straight into fresh buffers that the arrays then wrap, with no
JSON and no extra copy. Frame layout (little endian):

    u32 meta_len | u32 n_buffers | u64 len * n_buffers | meta | buffer * n_buffers
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
import threading

from infaas import errors

_HEAD = struct.Struct("<II")
MAX_BUFFERS = 4096


def encode(message: dict) -> list:
    buffers: list[pickle.PickleBuffer] = []
    meta = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    head = _HEAD.pack(len(meta), len(raws)) + struct.pack(f"<{len(raws)}Q", *(r.nbytes for r in raws))
    return [head, meta, *raws]


def _decode(meta: bytes, buffers: list[bytearray]) -> dict:
    return pickle.loads(meta, buffers=buffers)


async def read_message(reader: asyncio.StreamReader) -> dict:
    """Read one message; raises ``asyncio.IncompleteReadError`` at EOF."""
    meta_len, n = _HEAD.unpack(await reader.readexactly(_HEAD.size))
    if n > MAX_BUFFERS:
        raise ValueError(f"corrupt frame: {n} buffers")
    sizes = struct.unpack(f"<{n}Q", await reader.readexactly(8 * n)) if n else ()
    meta = await reader.readexactly(meta_len)
    buffers = [bytearray(await reader.readexactly(size)) if size else bytearray() for size in sizes]
    return _decode(meta, buffers)


def write_message(writer: asyncio.StreamWriter, message: dict) -> None:
    writer.writelines(encode(message))


class PickleFrames:
    """These frames as a stream codec (``read`` / ``write``), for a channel private to its two ends: the
    socketpair between a frontend and the worker process it started. A network listener uses
    :class:`infaas.protocol.peer_wire.Frames` instead, which cannot run code when decoding."""

    async def read(self, reader: asyncio.StreamReader) -> dict:
        return await read_message(reader)

    def write(self, writer: asyncio.StreamWriter, message: dict) -> None:
        write_message(writer, message)


class SocketChannel:
    """Blocking side of the channel, used inside the worker process (thread-safe sends)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()

    def _recv_into(self, size: int) -> bytearray:
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            n = self.sock.recv_into(view[got:], size - got)
            if n == 0:
                raise EOFError("frontend closed the channel")
            got += n
        return buf

    def recv(self) -> dict:
        meta_len, n = _HEAD.unpack(self._recv_into(_HEAD.size))
        if n > MAX_BUFFERS:
            raise ValueError(f"corrupt frame: {n} buffers")
        sizes = struct.unpack(f"<{n}Q", self._recv_into(8 * n)) if n else ()
        meta = bytes(self._recv_into(meta_len))
        return _decode(meta, [self._recv_into(size) for size in sizes])

    def send(self, message: dict) -> None:
        frames = encode(message)
        with self._send_lock:
            for frame in frames:
                self.sock.sendall(frame)


_KINDS: dict[str, type[errors.InfaasError]] = {
    "DeadlineExceeded": errors.DeadlineExceeded,
    "Overloaded": errors.Overloaded,
    "ArtifactCorrupt": errors.Unavailable,
    "Cancelled": errors.Cancelled,
    "Unavailable": errors.Unavailable,
    "WorkerCrashed": errors.WorkerCrashed,
    "ReplicaGone": errors.ReplicaGone,
    "InvalidArgument": errors.InvalidInput,  # ONNX Runtime's bad-input error
    "InvalidInput": errors.InvalidInput,
    "RuntimeContractError": errors.RuntimeContractError,
}


def error_from_reply(reply: dict, worker: str) -> errors.InfaasError:
    """Turn a worker's error reply into the matching infaas error."""
    kind = _KINDS.get(reply.get("kind", ""), errors.InfaasError)
    return kind(f"{reply.get('error', 'worker error')} (worker {worker})", reply.get("retry_after_s"))
