"""Admission at the door: deadlines count from the moment the server first sees a request, and the
frontend refuses new inference requests at once, before reading their bodies, when it is itself the
bottleneck (too many in flight, or an event loop running late); health stays answered."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import httpx
import pytest

from infaas.app import BackgroundServer
from infaas.settings import Settings
from tests.conftest import copy_data_dir, one_worker_settings

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture
def server(tmp_path, digits_data_dir):
    data = copy_data_dir(digits_data_dir, tmp_path / "d")
    settings = Settings(
        data_dir=data, port=0, workers=1, autoscale=False, profile_on_register=False, max_inflight_requests=2
    )
    with BackgroundServer(settings) as srv:
        yield srv


def _body(samples, timeout_us: int | None = None) -> bytes:
    body: dict = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": samples[0][0].tolist()}]}
    if timeout_us is not None:
        body["parameters"] = {"timeout": timeout_us}
    return json.dumps(body).encode()


def _slow_post(url: str, body: bytes, hold_s: float, path: str = "/v2/models/digits-mlp/infer") -> tuple[int, str]:
    """POST whose headers and first bytes arrive at once and the rest ``hold_s`` later (a slow upload)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        s.sendall(head.encode() + body[:10])
        time.sleep(hold_s)
        s.sendall(body[10:])
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply.split(b"\r\n\r\n", 1)[1]) < _length(reply):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    return status, reply.split(b"\r\n\r\n", 1)[1].decode()


def _length(reply: bytes) -> int:
    m = re.search(rb"content-length: (\d+)", reply.split(b"\r\n\r\n", 1)[0], re.I)
    return int(m.group(1)) if m else 0


def _refused(url: str, door: str, reason: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    m = re.search(rf'infaas_door_refused_total{{door="{door}",reason="{reason}"}} ([0-9.e+]+)', text)
    return float(m.group(1)) if m else 0.0


def test_a_request_whose_deadline_passed_while_it_waited_is_refused_undecoded(server, digits_samples):
    # 0.5 s of deadline, and its body arrives 0.8 s after its headers: the deadline counts from the door
    status, text = _slow_post(server.url, _body(digits_samples, timeout_us=500_000), hold_s=0.8)
    assert status == 503 and "had passed after waiting" in text and "not decoded" in text, text
    assert _refused(server.url, "rest", "expired") == 1
    # the same request sent at once is served
    status, text = _slow_post(server.url, _body(digits_samples, timeout_us=500_000), hold_s=0.0)
    assert status == 200, text


def test_an_unreachable_objective_is_the_callers_error_even_after_a_wait(server, digits_samples):
    """Judged before expiry: a latency_ms no variant meets is a 400 saying why, however long the request
    waited (its 0.1 us budget passed while its body arrived); a request whose own timeout passed while
    it waited is a 503 (the first test)."""
    body = json.loads(_body(digits_samples))
    body["parameters"] = {"latency_ms": 0.0001}
    status, text = _slow_post(server.url, json.dumps(body).encode(), hold_s=0.2)
    assert status == 400 and "latency_ms 0.0001 unreachable" in text, text
    assert _refused(server.url, "rest", "expired") == 0


def test_the_answer_reports_the_time_since_the_door_saw_the_request(server, digits_samples):
    # the body arrives 0.4 s after the headers: server_ms counts that wait, total_ms (routing on) does not
    status, text = _slow_post(server.url, _body(digits_samples), hold_s=0.4)
    assert status == 200, text
    params = json.loads(text)["parameters"]
    assert params["server_ms"] >= 400 > params["total_ms"], params


def test_a_stalled_event_loop_refuses_new_inference_at_once_and_health_still_answers(server, digits_samples):
    body = _body(digits_samples)
    results: dict[str, int] = {}

    def send(name: str, method: str, path: str) -> None:
        r = httpx.request(method, server.url + path, content=body if method == "POST" else None, timeout=30)
        results[name] = r.status_code
        results[name + "_text"] = r.text  # type: ignore[assignment]

    server.loop.call_soon_threadsafe(time.sleep, 1.5)  # the frontend's loop blocks, longer than the lag window
    time.sleep(0.2)
    threads = [
        threading.Thread(target=send, args=("infer", "POST", "/v2/models/digits-mlp/infer")),
        threading.Thread(target=send, args=("health", "GET", "/v2/health/ready")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results["health"] == 200
    assert results["infer"] == 503 and "event loop runs" in results["infer_text"], results
    assert _refused(server.url, "rest", "loop_lag") >= 1
    time.sleep(0.6)  # the lag has passed: served again
    assert httpx.post(server.url + "/v2/models/digits-mlp/infer", content=body, timeout=30).status_code == 200


def test_requests_past_the_in_flight_bound_are_refused_before_their_body_is_read(server, digits_samples):
    holders = [
        threading.Thread(target=_slow_post, args=(server.url, _body(digits_samples), 1.5)) for _ in range(2)
    ]  # two slow uploads hold the door's two places
    for t in holders:
        t.start()
    time.sleep(0.5)
    r = httpx.post(server.url + "/v2/models/digits-mlp/infer", content=_body(digits_samples), timeout=30)
    assert r.status_code == 503 and "in flight" in r.json()["error"] and r.headers["retry-after"] == "1"
    assert httpx.get(server.url + "/v2/health/live", timeout=10).status_code == 200
    for t in holders:
        t.join(30)
    assert _refused(server.url, "rest", "inflight") == 1
    assert (
        httpx.post(server.url + "/v2/models/digits-mlp/infer", content=_body(digits_samples), timeout=30).status_code
        == 200
    )


def test_the_grpc_door_refuses_inference_while_the_loop_stalls_and_still_answers_health(tmp_path, digits_data_dir):
    """The same door on gRPC, as tritonclient sees it: UNAVAILABLE with the reason, at once; the
    readiness call (not an inference) is answered; counted under door="grpc"."""
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    settings = one_worker_settings(digits_data_dir, tmp_path / "d")
    with BackgroundServer(settings) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        inp = grpcclient.InferInput("input", [1, 64], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 64), np.float32))
        assert client.infer("digits-mlp", [inp]).as_numpy("label").shape == (1,)
        results: dict[str, object] = {}

        def infer() -> None:
            try:
                client.infer("digits-mlp", [inp], client_timeout=30)
                results["infer"] = "served"
            except InferenceServerException as exc:
                results["infer"] = exc

        def ready() -> None:
            results["ready"] = client.is_server_ready()

        server.loop.call_soon_threadsafe(time.sleep, 1.5)  # the frontend's loop blocks, longer than the lag window
        time.sleep(0.2)
        threads = [threading.Thread(target=infer), threading.Thread(target=ready)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        refused = results["infer"]
        assert isinstance(refused, InferenceServerException), results
        assert "UNAVAILABLE" in str(refused.status()) and "event loop runs" in refused.message(), refused
        assert results["ready"] is True
        assert _refused(server.url, "grpc", "loop_lag") >= 1
        time.sleep(0.6)  # the lag has passed: served again
        assert client.infer("digits-mlp", [inp]).as_numpy("label").shape == (1,)
        client.close()


def _on_loop(server, fn) -> None:
    """Run ``fn`` on the server's event loop (where the doors' state lives) and wait for it."""
    done = threading.Event()
    server.loop.call_soon_threadsafe(lambda: (fn(), done.set()))
    assert done.wait(10)


def test_a_model_whose_workers_refuse_for_load_is_throttled_at_both_doors_then_served_again(
    tmp_path, digits_data_dir, digits_samples
):
    """503s (requests whose 1-us deadline passed, as a crashed worker's would be) are not load to shed:
    the door keeps passing requests. Once the model's workers have refused requests as overloaded
    while 30 were in flight (429; recorded on the doors' shared throttle, as their answers would be),
    the door holds the model to 27 in flight and refuses new requests past that itself (429, body
    unread, counted under reason="throttle"), on REST and on gRPC alike; its count of refusals fades
    within seconds and the model is served again."""
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    # door_throttle_busy 0: as if the frontend were busy (a test's few requests do not make it so)
    settings = one_worker_settings(digits_data_dir, tmp_path / "d", door_throttle_busy=0.0)
    url = "/v2/models/digits-mlp/infer"
    with BackgroundServer(settings) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        late = [http.post(url, content=_body(digits_samples, timeout_us=1)).status_code for _ in range(30)]
        assert set(late) == {503}, late
        assert all(http.post(url, content=_body(digits_samples)).status_code == 200 for _ in range(10))
        assert _refused(server.url, "rest", "throttle") == 0

        throttle = server.services.doors["rest"].throttle
        assert throttle is server.services.doors["grpc"].throttle

        def refused_for_load() -> None:  # 30 requests in flight, then the workers refuse two of them
            for _ in range(30):
                throttle.arrived("digits-mlp", time.monotonic(), busy=-1.0)
            for _ in range(2):
                throttle.answered("digits-mlp", time.monotonic(), accepted=False)
            limits.append(throttle.limit("digits-mlp", time.monotonic()))

        limits: list[float | None] = []

        _on_loop(server, refused_for_load)
        answers = [http.post(url, content=_body(digits_samples)) for _ in range(10)]
        refused = [r for r in answers if r.status_code == 429]
        assert limits[-1] == pytest.approx(27.0), limits  # 0.9 of the 30 in flight
        assert refused and "28 are in flight" in refused[0].json()["error"] and refused[0].headers["retry-after"]
        assert _refused(server.url, "rest", "throttle") == len(refused)

        client = grpcclient.InferenceServerClient(server.grpc_url)
        inp = grpcclient.InferInput("input", [1, 64], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 64), np.float32))
        _on_loop(server, refused_for_load)
        codes = []
        for _ in range(10):
            try:
                client.infer("digits-mlp", [inp])
                codes.append("OK")
            except InferenceServerException as exc:
                codes.append(str(exc.status()))
        throttled = codes.count("StatusCode.RESOURCE_EXHAUSTED")
        assert throttled and _refused(server.url, "grpc", "throttle") == throttled, codes
        assert set(codes) <= {"StatusCode.RESOURCE_EXHAUSTED", "OK"}, codes

        time.sleep(3.0)  # six of the throttle's time constants: its counts have faded
        assert all(http.post(url, content=_body(digits_samples)).status_code == 200 for _ in range(20))
        assert client.infer("digits-mlp", [inp]).as_numpy("label").shape == (1,)
        client.close()
