"""Clean shutdown whatever is gone: SIGTERM stops the server with exit code 0 and no traceback, with one
log line for each part that could not stop cleanly (its store or its worker already gone)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from infaas.app import free_port
from infaas.client import Client
from tests.conftest import start_redis, wait_until

pytestmark = [pytest.mark.timeout(180)]


def _serve(tmp_path, *extra: str) -> tuple[subprocess.Popen, str, object]:
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    cmd = [sys.executable, "-m", "infaas.cli", "serve", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    proc = subprocess.Popen([*cmd, *extra], stdout=log, stderr=log, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    with Client(url, timeout=5) as c:
        assert wait_until(lambda: _ready(c), 60), (tmp_path / "server.log").read_text()[-3000:]
    return proc, url, log


def _ready(c: Client) -> bool:
    try:
        return c.ready()
    except Exception:
        return False


def _stopped_cleanly(proc: subprocess.Popen, tmp_path) -> str:
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(60)
    out = (tmp_path / "server.log").read_text()
    assert code == 0, out[-3000:]
    assert "Traceback" not in out and "shutdown failed" not in out, out[-3000:]
    return out


def test_sigterm_after_the_store_is_gone_exits_zero_without_a_traceback(tmp_path):
    redis_proc, url = start_redis()
    try:
        proc, _, _ = _serve(tmp_path, "--store", url, "--workers", "1")
        redis_proc.kill()  # the store disappears under a running frontend
        redis_proc.wait(10)
        time.sleep(3)  # a lease renewal fails meanwhile (every lease_s / 3)
        out = _stopped_cleanly(proc, tmp_path)
    finally:
        if redis_proc.poll() is None:
            redis_proc.kill()
    assert "lease renewal failed" in out
    assert "shutdown: could not release the controller lease" in out  # said, in one line


def test_sigterm_while_a_worker_is_dead_exits_zero_without_a_traceback(tmp_path):
    proc, url, _ = _serve(tmp_path, "--workers", "1")
    with Client(url) as c:
        pid = c.workers()[0]["pid"]
    os.kill(pid, signal.SIGKILL)
    _stopped_cleanly(proc, tmp_path)
