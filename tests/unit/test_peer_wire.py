"""The network wire to Ray actors: only holders of the secret get a frame read, and no frame can run code."""

from __future__ import annotations

import asyncio
import pathlib
import pickle
import struct

import numpy as np
import pytest

from infaas.protocol import worker_wire
from infaas.protocol.peer_wire import MAGIC, Frames, Listener, WireError, WireRefused, connect, encode

SECRET = b"s" * 32
LIMIT = 1 << 20


class _Canary:
    """Unpickling this creates a file: proof that a frame's bytes ran as code."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (self.path,))


async def _echo_listener(seen: list) -> tuple[Listener, int]:
    def session(writer):
        def on_message(msg):
            seen.append(msg)
            listener.frames.write(writer, {"id": msg.get("id"), "ok": True, "echo": msg})

        return on_message

    listener = Listener(SECRET, session, max_body_bytes=LIMIT, handshake_s=1.0)
    port = await listener.start("127.0.0.1")
    return listener, port


async def _round_trip(port: int, message: dict, secret: bytes = SECRET) -> dict:
    reader, writer = await connect("127.0.0.1", port, secret, 5.0)
    frames = Frames(LIMIT)
    frames.write(writer, message)
    reply = await frames.read(reader)
    writer.close()
    return reply


async def _closed_by_listener(reader: asyncio.StreamReader) -> bool:
    """True when the listener hangs up (EOF) within 3 s (its handshake timeout here is 1 s)."""
    try:
        return await asyncio.wait_for(reader.read(), 3.0) is not None
    except TimeoutError:
        return False


def test_arrays_and_plain_values_round_trip_intact():
    async def run():
        seen: list = []
        listener, port = await _echo_listener(seen)
        msg = {
            "op": "infer",
            "id": 7,
            "deadline": None,
            "arrival": 12.5,
            "inputs": {
                "x": np.random.default_rng(0).random((4, 3, 8), dtype=np.float32),
                "ids": np.arange(10, dtype=np.int64)[::3],  # not contiguous
                "mask": np.array([[True, False]]),
                "text": np.array([b"ab", b"", "caf\u00e9".encode()], dtype=object),
                "empty": np.zeros((0, 5), dtype=np.float16),
                "scalar": np.float64(2.5),
            },
        }
        reply = await _round_trip(port, msg)
        listener.close()
        return msg, reply["echo"]

    msg, got = asyncio.run(run())
    for name in ("x", "ids", "mask", "empty"):
        np.testing.assert_array_equal(got["inputs"][name], msg["inputs"][name])
        assert got["inputs"][name].dtype == msg["inputs"][name].dtype
    assert list(got["inputs"]["text"]) == [b"ab", b"", "caf\u00e9".encode()]
    assert got["inputs"]["scalar"] == 2.5 and got["deadline"] is None and got["arrival"] == 12.5
    assert got["inputs"]["x"].flags.writeable


def test_a_peer_without_the_secret_is_refused_before_any_frame_is_read():
    async def run():
        seen: list = []
        listener, port = await _echo_listener(seen)
        with pytest.raises(WireRefused):
            await _round_trip(port, {"op": "infer"}, secret=b"wrong" * 8)
        # a client that skips the handshake and sends a frame at once gets nothing decoded either
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await reader.readexactly(len(MAGIC) + 32))[: len(MAGIC)] == MAGIC
        writer.writelines(encode({"op": "infer", "id": 1}))
        hung_up = await _closed_by_listener(reader)
        writer.close()
        ok = await _round_trip(port, {"op": "ping", "id": 2})  # the listener still serves peers that hold it
        listener.close()
        return seen, listener.counts, hung_up, ok

    seen, counts, hung_up, ok = asyncio.run(run())
    assert hung_up
    assert counts["refused"] == 2 and counts["connections"] == 1
    assert [m["op"] for m in seen] == ["ping"] and ok["ok"]


def test_a_pickle_that_would_run_code_is_rejected_and_never_runs(tmp_path):
    canary = tmp_path / "canary"
    evil = b"".join(bytes(p) for p in worker_wire.encode({"op": "infer", "x": _Canary(canary)}))
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Canary(proof)))  # the payload is real: unpickled, it writes its file
    assert proof.exists()

    async def run():
        seen: list = []
        listener, port = await _echo_listener(seen)
        results = []
        for raw in (evil, struct.pack("<IQ", 60, 0) + pickle.dumps(_Canary(canary))[:60].ljust(60, b" ")):
            reader, writer = await connect("127.0.0.1", port, SECRET, 5.0)
            writer.write(raw)
            results.append(await _closed_by_listener(reader))
            writer.close()
        ok = await _round_trip(port, {"op": "ping", "id": 3})
        listener.close()
        return seen, listener.counts, results, ok

    seen, counts, results, ok = asyncio.run(run())
    assert not canary.exists()
    assert results == [True, True] and counts["rejected"] == 2
    assert [m["op"] for m in seen] == ["ping"] and ok["ok"]


@pytest.mark.parametrize(
    "header, body_len, why",
    [
        (b"{}", LIMIT + 1, "over the limit"),
        (b'{"x": {"$nd": ["|O", [2], 16]}}', 16, "not allowed"),
        (b'{"x": {"$nd": ["<f4", [4], 8]}}', 8, "declares 8 bytes"),
        (b'{"x": {"$nd": ["<f4", [-1], 0]}}', 0, "non-negative"),
        (b'{"x": {"$nd": ["<f4", [1000000, 1000000], 4000000000000]}}', 0, "its arrays declare"),
        (b"[1, 2]", 0, "not a JSON object"),
        (b"\xff\xfe", 0, "not JSON"),
    ],
)
def test_malformed_or_oversized_frames_are_refused_before_allocation(header, body_len, why):
    async def run():
        reader = asyncio.StreamReader()
        reader.feed_data(struct.pack("<IQ", len(header), body_len) + header)
        reader.feed_eof()
        with pytest.raises(WireError, match=why):
            await Frames(LIMIT).read(reader)

    asyncio.run(run())


def test_listener_takes_the_first_free_port_of_its_range():
    async def run():
        first, port = await _echo_listener([])
        second = Listener(SECRET, lambda w: lambda m: None, max_body_bytes=LIMIT)
        got = await second.start("127.0.0.1", (port, port + 20))
        with pytest.raises(OSError, match="no free port"):
            await Listener(SECRET, lambda w: lambda m: None, max_body_bytes=LIMIT).start("127.0.0.1", (port, port))
        first.close()
        second.close()
        return port, got

    port, got = asyncio.run(run())
    assert port < got <= port + 20
