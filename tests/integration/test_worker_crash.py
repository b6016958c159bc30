"""A worker that dies mid-request: its requests get a clear error (never a hang), and it comes back."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from infaas.app import BackgroundServer
from infaas.client import Client, InfaasClientError
from infaas.settings import Settings
from tests.conftest import copy_data_dir, wait_until


@pytest.fixture
def server(tmp_path, digits_data_dir):
    data = copy_data_dir(digits_data_dir, tmp_path / "data")
    srv = BackgroundServer(Settings(data_dir=data, port=0, workers=1, request_timeout_s=30)).start()
    yield srv
    srv.stop()


@pytest.mark.slow
def test_crash_mid_request_errors_then_restarts(server, digits_samples):
    import os
    import signal

    worker = server.services.cluster.workers[0]
    old_pid = worker.pid
    hosted = sorted(worker.loaded_names())
    x = digits_samples[0][:16]
    clients = [Client(server.url) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        os.kill(worker.pid, signal.SIGSTOP)  # frozen: what we send now is surely in flight when it dies
        pending = [pool.submit(c.infer, "digits-mlp", x) for c in clients]
        assert wait_until(lambda: worker.outstanding() >= 4, timeout=10)
        t0 = time.monotonic()
        worker.kill()
        for f in pending:
            with pytest.raises(InfaasClientError) as exc:
                f.result(timeout=30)
            assert exc.value.status == 503
            assert "died (signal 9) while serving this request; it is being restarted" in exc.value.message
        assert time.monotonic() - t0 < 10, "in-flight requests must fail at once, not hang"
    for c in clients:
        c.close()

    assert wait_until(lambda: worker.alive and worker.pid != old_pid)
    # routed to again only once its variants are back in the new process
    assert wait_until(lambda: hosted and all(worker.hosts(v) for v in hosted))
    assert worker.restarts == 1
    with Client(server.url) as c:
        r = c.infer("digits-mlp", digits_samples[0][:4])
        assert r.outputs["label"].shape == (4,)
        assert c.workers()[0]["restarts"] == 1
    assert server.services.metrics.exposition().decode().count('infaas_worker_restarts_total{worker="w0"} 1.0') == 1


@pytest.mark.slow
def test_killing_under_load_never_hangs_a_request(server, digits_samples):
    worker = server.services.cluster.workers[0]
    outcomes = []

    def hammer(i):
        with Client(server.url) as c:
            end = time.monotonic() + 3
            while time.monotonic() < end:
                t0 = time.monotonic()
                try:
                    c.infer("digits-mlp", digits_samples[0][:16])
                    outcomes.append(("ok", time.monotonic() - t0))
                except InfaasClientError as exc:
                    outcomes.append((exc.status, time.monotonic() - t0))

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(hammer, i) for i in range(4)]
        time.sleep(0.5)
        worker.kill()
        for f in futures:
            f.result(timeout=60)
    assert {o[0] for o in outcomes} <= {"ok", 503}
    assert max(o[1] for o in outcomes) < 10
    assert outcomes[-1][0] == "ok"  # served again after the restart


@pytest.mark.slow
def test_requests_while_the_worker_is_down_fail_fast(server, digits_samples):
    worker = server.services.cluster.workers[0]
    worker.restart = False
    worker.kill()
    assert wait_until(lambda: not worker.alive)
    with Client(server.url) as c:
        t0 = time.monotonic()
        with pytest.raises(InfaasClientError) as exc:
            c.infer("digits-mlp", digits_samples[0][:1])
        assert exc.value.status == 503 and time.monotonic() - t0 < 5
        assert c.live()
