"""A local worker: a subprocess of the server pinned to its cores, reached over a socketpair."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from infaas.cluster.channel import Channel, Recovery
from infaas.cluster.handle import ManagedWorker
from infaas.errors import Unavailable
from infaas.hardware import HardwareKind
from infaas.protocol.worker_wire import PickleFrames

_SOCKET_BUFFER = 4 * 2**20


class ProcessTransport:
    """Each incarnation is a new ``python -m infaas.worker`` process on ``cores``; requests and control
    calls share its socketpair (pickled frames, arrays out of band: the process is ours)."""

    frames = PickleFrames()
    drains_all = False  # only this frontend sends to the process: the handle drains its own requests
    shares_memory = True  # same machine: tensors in shared-memory regions travel as spans, read in place

    def __init__(
        self,
        name: str,
        cores: tuple[int, ...],
        *,
        allow_spinning: bool = False,
        start_timeout_s: float = 30.0,
        restart: bool = True,
        kind: HardwareKind | None = None,
    ) -> None:
        self.name = name
        self.cores = cores
        self.kind = kind
        self.node = "local"
        self.pid: int | None = None
        self.allow_spinning = allow_spinning
        self.start_timeout_s = start_timeout_s
        self.restart = restart
        self.proc: subprocess.Popen | None = None

    async def open(self, lost: Callable[[str], None]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Start a process and connect to it (no variants yet); kills it if the handshake fails. Its
        death shows as the end of the stream (``lost`` is not needed)."""
        parent, child = socket.socketpair()
        for sock in (parent, child):  # whole tensors fit in the buffers: fewer partial writes and wake-ups
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        cmd = [
            sys.executable,
            "-m",
            "infaas.worker",
            "--fd",
            str(child.fileno()),
            "--cores",
            ",".join(map(str, self.cores)),
        ]
        if self.allow_spinning:
            cmd.append("--allow-spinning")
        proc = self.proc = subprocess.Popen(cmd, pass_fds=[child.fileno()], stdin=subprocess.DEVNULL)
        child.close()
        self.pid = proc.pid
        try:
            reader, writer = await asyncio.open_unix_connection(sock=parent)
            hello = await asyncio.wait_for(self.frames.read(reader), self.start_timeout_s)
            if not hello.get("ok"):
                raise Unavailable(f"worker {self.name} did not start: {hello}")
        except BaseException as exc:
            proc.kill()
            await asyncio.to_thread(proc.wait)
            parent.close()
            if isinstance(exc, Unavailable | asyncio.CancelledError):
                raise
            raise Unavailable(f"worker {self.name} did not start: {exc!r}") from exc
        return reader, writer

    async def call(self, message: dict, timeout: float, channel: Channel) -> dict:
        return await channel.call(message, timeout)

    async def placement(self) -> dict | None:
        return None  # only this handle changes what the process hosts

    async def exit_reason(self, exc: BaseException | None) -> str:
        if self.proc is None:
            return "no process"
        code = await asyncio.to_thread(self.proc.wait)
        return f"exit code {code}" if code >= 0 else f"signal {-code}"

    def recovery(self, why: str) -> Recovery:
        return Recovery.RESTART if self.restart else Recovery.NONE

    async def close(self, grace_s: float, kill: bool, channel: Channel) -> None:
        """Ask the process to exit, wait up to ``grace_s``, kill it past that (the process is this
        frontend's: ``kill`` changes nothing)."""
        if grace_s > 0 and channel.writer is not None:
            with contextlib.suppress(Exception):
                self.frames.write(channel.writer, {"op": "shutdown"})
                await channel.writer.drain()
        if self.proc is not None:
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), grace_s)
            except TimeoutError:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()


def local_worker(name: str, cores: tuple[int, ...], **options: Any) -> ManagedWorker:
    """A worker process on this machine, restarted (with its variants) if it dies, unless ``restart=False``;
    ``options`` are :class:`ProcessTransport`'s."""
    return ManagedWorker(name, ProcessTransport(name, cores, **options))
