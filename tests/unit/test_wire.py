"""Frames between frontend and worker: arrays travel out of band, intact, in both directions."""

import asyncio
import socket

import numpy as np

from infaas.protocol.worker_wire import SocketChannel, read_message, write_message


def test_round_trip_both_directions():
    a, b = socket.socketpair()
    big = np.random.default_rng(0).random((64, 3, 32, 32), dtype=np.float32)
    msg = {"op": "infer", "id": 3, "inputs": {"x": big, "y": np.arange(5)[::2], "e": np.zeros((0, 4))}}

    async def run():
        reader, writer = await asyncio.open_unix_connection(sock=a)
        receiving = asyncio.ensure_future(asyncio.to_thread(SocketChannel(b).recv))
        write_message(writer, msg)  # larger than the socket buffer: the peer must be reading
        await writer.drain()
        got = await receiving
        sending = asyncio.ensure_future(
            asyncio.to_thread(SocketChannel(b).send, {"id": 3, "ok": True, "outputs": got["inputs"]})
        )
        reply = await read_message(reader)
        await sending
        writer.close()
        return got, reply

    got, reply = asyncio.run(run())
    for m in (got["inputs"], reply["outputs"]):
        np.testing.assert_array_equal(m["x"], big)
        np.testing.assert_array_equal(m["y"], np.array([0, 2, 4]))
        assert m["e"].shape == (0, 4)
    assert got["inputs"]["x"].flags.writeable
    b.close()
