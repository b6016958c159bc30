"""One operation in a fresh worker process, synchronously: what the registry uses to run a model it
has just been given (a model that crashes or exhausts memory takes that process down, not the server)."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

from infaas.errors import InvalidInput
from infaas.protocol.worker_wire import SocketChannel, error_from_reply


def call_isolated(message: dict, timeout_s: float = 600.0, cores: tuple[int, ...] = ()) -> Any:
    """Start ``python -m infaas.worker``, run one op (``message``), stop it; the op's result.

    Raises :class:`InvalidInput` when the process dies or does not answer within ``timeout_s`` (the
    model is what it was asked to run), and the op's own error otherwise."""
    parent, child = socket.socketpair()
    cmd = [sys.executable, "-m", "infaas.worker", "--fd", str(child.fileno()), "--cores", ",".join(map(str, cores))]
    proc = subprocess.Popen(cmd, pass_fds=[child.fileno()], stdin=subprocess.DEVNULL)
    child.close()
    parent.settimeout(timeout_s)
    channel = SocketChannel(parent)
    try:
        channel.recv()  # hello
        channel.send({"id": 1, **message})
        reply = channel.recv()
        channel.send({"op": "shutdown", "id": 2})
    except (EOFError, OSError) as exc:
        proc.kill()
        proc.wait()
        code = proc.returncode
        why = "did not answer in time" if isinstance(exc, TimeoutError) else f"died (exit code {code})"
        raise InvalidInput(f"the model's {message.get('op')} run {why}: is it a valid, loadable model?") from None
    finally:
        parent.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if not reply.get("ok"):
        raise error_from_reply(reply, f"isolated pid {proc.pid}")
    return reply["result"]
