"""Offline jobs: correct outputs, yielding to online load, surviving a restart; CLI and images."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from infaas.app import BackgroundServer
from infaas.client import Client, InfaasClientError
from infaas.loadgen import ramp
from infaas.policy.autoscale import capacity_rps
from infaas.registry import Registry
from infaas.settings import Settings
from infaas.zoo import digits
from tests.conftest import copy_data_dir, digits_body, wait_until

pytestmark = pytest.mark.slow


def rows(n: int, seed: int = 1) -> np.ndarray:
    x, _ = digits.sample_inputs(n=min(n, 500))
    return np.resize(x, (n, 64)) + np.random.default_rng(seed).uniform(0, 1, (n, 64)).astype(np.float32)


def direct(client: Client, variant: str, x: np.ndarray, chunk: int = 16) -> dict[str, np.ndarray]:
    """The same rows through the same variant, in the job's batch size: an INT8-dynamic variant
    quantizes each batch on its own range, so its answers depend on which rows share a batch."""
    arch = variant.split(".")[0]
    parts = [client.infer(arch, x[i : i + chunk], version=variant).outputs for i in range(0, len(x), chunk)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@pytest.fixture()
def server(digits_profiled_dir, tmp_path):
    srv = BackgroundServer(
        Settings(
            data_dir=copy_data_dir(digits_profiled_dir, tmp_path / "d"), port=0, workers=1, profile_on_register=False
        )
    ).start()
    yield srv
    srv.stop()


def test_a_job_completes_and_its_outputs_equal_direct_inference(server):
    x = rows(1000)
    with Client(server.url) as client:
        job = client.submit_job("digits-classification", {"input": x}, min_accuracy=0.96)
        assert job["status"] == "queued" and job["rows"] == 1000
        assert wait_until(lambda: client.job(job["id"])["status"] == "done", timeout=60), client.job(job["id"])
        done = client.job(job["id"])
        assert done["progress"] == 1.0 and sum(done["variants"].values()) == 1000
        # served by the cheapest variants with accuracy >= 0.96 (a cheaper one takes over once the
        # background load it triggered is done); the job records which rows each one served
        accuracy = {v["name"]: v["accuracy"] for v in client.variants()}
        assert all(accuracy[v] >= 0.96 for v in done["variants"]), done["variants"]
        assert [s[0] for s in done["segments"]][0] == 0 and done["segments"][-1][1] == 1000
        result = client.job_result(job["id"])
        for start, end, variant in done["segments"]:
            expected = direct(client, variant, x[start:end], done["batch_rows"])
            np.testing.assert_array_equal(result["label"][start:end], expected["label"])
            np.testing.assert_allclose(
                result["probabilities"][start:end], expected["probabilities"], rtol=1e-5, atol=1e-6
            )
        assert any(d["kind"] == "job" and "done" in d["reason"] for d in client.decisions(1000))


def test_bad_jobs_get_clear_errors(server):
    with Client(server.url) as client:
        with pytest.raises(InfaasClientError) as exc:
            client.submit_job("digits-classification", {"input": np.zeros((4, 10), np.float32)})
        assert exc.value.status == 400 and "shape [4, 10], expected [-1, 64]" in exc.value.message
        with pytest.raises(InfaasClientError) as exc:
            client.submit_job("digits-classification", {"input": rows(4)}, min_accuracy=0.999)
        assert exc.value.status == 400 and "unreachable" in exc.value.message
        with pytest.raises(InfaasClientError) as exc:
            client.submit_job("no-such-task", {"input": rows(4)})
        assert exc.value.status == 404
        with pytest.raises(InfaasClientError) as exc:
            client.job("nope")
        assert exc.value.status == 404
        job = client.submit_job("digits-classification", {"input": rows(50_000)})
        with pytest.raises(InfaasClientError) as exc:
            client.job_result(job["id"])
        assert exc.value.status == 400 and "no result yet" in exc.value.message
        assert client.cancel_job(job["id"])["status"] == "cancelled"
        assert client.live()


def test_a_job_survives_a_restart_and_resumes_from_its_last_batch(digits_profiled_dir, tmp_path):
    settings = Settings(
        data_dir=copy_data_dir(digits_profiled_dir, tmp_path / "d"), port=0, workers=1, profile_on_register=False
    )
    x = rows(12_000)
    server = BackgroundServer(settings).start()
    with Client(server.url) as client:
        job = client.submit_job("digits-classification", {"input": x}, min_accuracy=0.96)
        assert wait_until(lambda: client.job(job["id"])["done_rows"] >= 2000, timeout=60)
    server.stop()
    registry = Registry.open(settings.data_dir)
    stopped = registry.store.get("job", job["id"])
    registry.close()
    assert 2000 <= stopped["done_rows"] < 12_000 and stopped["status"] in ("running", "paused"), stopped

    server = BackgroundServer(settings).start()
    try:
        with Client(server.url) as client:
            assert wait_until(lambda: client.job(job["id"])["status"] == "done", timeout=300)
            done = client.job(job["id"])
            assert sum(done["variants"].values()) == 12_000  # resumed, not started again
            log = [d["reason"] for d in client.decisions(1000)]
            assert f"job {job['id']} resumed after a restart at {stopped['done_rows']}/12000 rows" in log
            result = client.job_result(job["id"])
            assert result["label"].shape == (12_000,)
            at = stopped["done_rows"]
            for lo, hi in ((0, 64), (at - 32, at + 32), (11_936, 12_000)):  # by the variant that served each row
                for start, end, variant in done["segments"]:
                    a, b = max(lo, start), min(hi, end)
                    if a < b:
                        np.testing.assert_array_equal(result["label"][a:b], direct(client, variant, x[a:b])["label"])
    finally:
        server.stop()


def test_a_job_pauses_while_online_load_is_high(heavy_dir, tmp_path):
    settings = Settings(
        data_dir=copy_data_dir(heavy_dir, tmp_path / "d"),
        port=0,
        workers=1,
        cores_per_worker=1,
        max_workers=1,
        profile_on_register=False,
    )
    server = BackgroundServer(settings).start()
    try:
        plane = server.services
        (name,) = {n for w in plane.cluster.workers for n in w.loaded_names()}
        per_second = capacity_rps(plane.catalog.profiles[name], plane.catalog.variants[name].max_batch) / 16
        load = threading.Thread(
            target=lambda: asyncio.run(
                ramp(
                    server.url,
                    "/v2/models/digits-conv/infer",
                    digits_body(16),
                    ["Content-Type: application/json"],
                    [(1.5 * per_second, 6.0)],
                )
            )
        )
        with Client(server.url) as client:
            load.start()
            assert wait_until(lambda: name in server.services.autoscaler.overloaded, timeout=10)
            job = client.submit_job("digits-conv", {"input": rows(3000)})
            assert wait_until(lambda: client.job(job["id"])["status"] == "paused", timeout=10)
            paused = client.job(job["id"])
            assert "overloaded" in paused["reason"]
            load.join()
            assert wait_until(lambda: client.job(job["id"])["status"] == "done", timeout=120)
            done = client.job(job["id"])
            assert done["pauses"] >= 1 and done["paused_s"] > 0
            assert any("resumed" in d["reason"] for d in client.decisions(1000) if d["kind"] == "job")
    finally:
        server.stop()


def test_cli_job_submit_watch_and_result(server, tmp_path):
    np.savez(tmp_path / "in.npz", input=rows(300))

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "infaas.cli", *args, "--url", server.url],
            capture_output=True,
            text=True,
            timeout=120,
        )

    out = cli("job", "submit", "digits-classification", "--input", str(tmp_path / "in.npz"), "--json")
    assert out.returncode == 0, out.stderr
    job_id = json.loads(out.stdout)["id"]
    watch = cli("job", "status", job_id, "--watch")
    assert watch.returncode == 0 and f"{job_id} done 300/300 rows" in watch.stdout, watch.stdout + watch.stderr
    res = cli("job", "result", job_id, "-o", str(tmp_path / "out.npz"))
    assert res.returncode == 0, res.stderr
    assert np.load(tmp_path / "out.npz")["label"].shape == (300,)
    listing = cli("job", "status")
    assert job_id in listing.stdout and "done" in listing.stdout


def test_jobs_that_keep_failing_are_marked_failed_and_the_queue_moves_on(digits_profiled_dir, tmp_path):
    """Was: a job whose model was removed, or whose input file is corrupt, was retried forever and
    every later job starved."""
    from infaas.control.jobs import Job

    data = copy_data_dir(digits_profiled_dir, tmp_path / "d")
    registry = Registry.open(data)
    for job_id, model in (("corrupt", "digits-classification"), ("orphan", "removed-architecture")):
        job = Job(id=job_id, model=model, rows=32, batch_rows=16)
        (data / "jobs" / job_id).mkdir(parents=True)
        if job_id == "corrupt":
            (data / "jobs" / job_id / "inputs.npz").write_bytes(b"PK\x03\x04 this is not a zip file")
        else:
            np.savez(data / "jobs" / job_id / "inputs.npz", input=rows(32))
        registry.store.put("job", job.id, job.model, job.model_dump(mode="json"))
    registry.close()
    server = BackgroundServer(
        Settings(data_dir=data, port=0, workers=1, profile_on_register=False, autoscale=False)
    ).start()
    try:
        with Client(server.url) as client:
            good = client.submit_job("digits-classification", {"input": rows(64)})
            assert wait_until(lambda: client.job(good["id"])["status"] == "done", timeout=60), client.jobs()
            corrupt, orphan = client.job("corrupt"), client.job("orphan")
            assert corrupt["status"] == "failed" and "cannot read the job's inputs" in corrupt["error"]
            assert orphan["status"] == "failed" and "removed-architecture" in orphan["error"]
    finally:
        server.stop()


def test_jobs_batch_within_every_variants_max_batch(digits_models, tmp_path):
    """Was: a job failed outright on an architecture whose max batch is below job_batch_rows."""
    model = next(m for m in digits_models if m.name == "digits-mlp")
    registry = Registry.open(tmp_path / "d")
    registry.register("narrow", "narrow-task", model.onnx, accuracy=0.9, max_batch=4, threads=1)
    registry.close()
    server = BackgroundServer(
        Settings(
            data_dir=tmp_path / "d", port=0, workers=1, profile_on_register=False, autoscale=False, job_batch_rows=16
        )
    ).start()
    try:
        with Client(server.url) as client:
            job = client.submit_job("narrow", {"input": rows(50)})
            assert job["batch_rows"] == 4
            assert wait_until(lambda: client.job(job["id"])["status"] == "done", timeout=60), client.job(job["id"])
            assert client.job_result(job["id"])["label"].shape == (50,)
    finally:
        server.stop()


def test_offline_work_is_not_online_demand(server):
    """Was: a job's batches counted as online busy time, so a job made its own variant look
    overloaded and scaled it up."""
    with Client(server.url) as client:
        job = client.submit_job("digits-classification", {"input": rows(5_000)})
        assert wait_until(lambda: client.job(job["id"])["status"] == "done", timeout=120)
        name = next(iter(client.job(job["id"])["variants"]))
    worker = next(w for w in server.services.cluster.workers if w.hosts(name))
    stats = asyncio.run_coroutine_threadsafe(worker.stats(), server.loop).result(10)["variants"][name]
    assert stats["offline_busy_s"] > 0 and stats["busy_s"] == 0, stats
    assert stats["offline_rows"] >= 5_000 and stats["arrived_rows"] == 0
    report = server.services.autoscaler.report()
    assert report["variants"].get(name, {}).get("state") != "overloaded"


def test_a_cancel_is_never_overwritten_by_the_runner(server):
    """Was: the runner wrote its stale in-memory record (status running) over a user's cancel."""
    with Client(server.url) as client:
        job = client.submit_job("digits-classification", {"input": rows(200_000)})
        assert wait_until(lambda: client.job(job["id"])["done_rows"] > 0, timeout=60)
        assert client.cancel_job(job["id"])["status"] == "cancelled"
        at = client.job(job["id"])["done_rows"]
        import time

        time.sleep(1.5)  # the runner's batches in flight finish meanwhile
        later = client.job(job["id"])
        assert later["status"] == "cancelled" and later["done_rows"] == at, later
