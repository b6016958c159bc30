"""KServe v2 REST over a real socket: uvicorn on an ephemeral port, a real worker process."""

import gzip

import httpx
import numpy as np
import orjson
import pytest

from infaas.client import Client, InfaasClientError


@pytest.fixture(scope="module")
def http(digits_server):
    with httpx.Client(base_url=digits_server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def client(digits_server):
    with Client(digits_server.url) as c:
        yield c


def json_body(x: np.ndarray, **extra) -> dict:
    return {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}],
        **extra,
    }


def test_health_and_server_metadata(http):
    assert http.get("/v2/health/live").status_code == 200
    assert http.get("/v2/health/ready").status_code == 200
    meta = http.get("/v2").json()
    assert meta["name"] == "infaas" and "binary_tensor_data" in meta["extensions"]


def test_json_infer_at_all_three_levels(http, digits_samples, client):
    x, y = digits_samples
    x, y = x[:8], y[:8]
    version = client.variants("digits-mlp")[0]["name"]
    for path in (
        "/v2/models/digits-classification/infer",  # model-less: task
        "/v2/models/digits-mlp/infer",  # architecture
        f"/v2/models/digits-mlp/versions/{version}/infer",
    ):  # explicit variant
        r = http.post(path, json=json_body(x, id="q1"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["id"] == "q1"
        out = {o["name"]: o for o in body["outputs"]}
        assert out["label"]["shape"] == [8] and out["probabilities"]["shape"] == [8, 10]
        assert (np.array(out["label"]["data"]) == y).mean() >= 0.75
        p = body["parameters"]
        assert p["variant"] == version and p["worker"] == "w0" and p["reason"]
        assert p["accuracy_source"] == "measured" and p["batch_size"] >= 8


def test_task_level_picks_the_most_accurate_and_says_so(http, digits_samples, client):
    x, _ = digits_samples
    best = max(client.architectures(), key=lambda a: a["accuracy"])
    p = http.post("/v2/models/digits-classification/infer", json=json_body(x[:1])).json()["parameters"]
    assert p["architecture"] == best["name"]
    assert "most accurate" in p["reason"]


def test_binary_request_and_response(client, digits_samples):
    x, y = digits_samples
    r = client.infer("digits-logreg", x[:16], binary=True)
    assert r.outputs["probabilities"].dtype == np.float32
    assert (r.outputs["label"] == y[:16]).mean() > 0.8
    j = client.infer("digits-logreg", x[:16], binary=False)
    np.testing.assert_allclose(j.outputs["probabilities"], r.outputs["probabilities"], rtol=1e-6)


def test_requested_outputs_only_and_per_output_binary(http, digits_samples):
    x, _ = digits_samples
    body = json_body(x[:2], outputs=[{"name": "label", "parameters": {"binary_data": True}}])
    r = http.post("/v2/models/digits-nb/infer", json=body)
    assert r.status_code == 200
    n = int(r.headers["inference-header-content-length"])
    header = orjson.loads(r.content[:n])
    assert [o["name"] for o in header["outputs"]] == ["label"]
    assert np.frombuffer(r.content[n:], np.int64).shape == (2,)


def test_gzip_request_body(http, digits_samples):
    x, _ = digits_samples
    r = http.post(
        "/v2/models/digits-nb/infer",
        content=gzip.compress(orjson.dumps(json_body(x[:2]))),
        headers={"content-encoding": "gzip", "content-type": "application/json"},
    )
    assert r.status_code == 200, r.text


def test_concurrent_requests_are_batched_and_answered_in_order(client, digits_server, digits_samples):
    from concurrent.futures import ThreadPoolExecutor

    x, _ = digits_samples
    clients = [Client(digits_server.url) for _ in range(8)]
    expected = np.concatenate([client.infer("digits-mlp", x[i : i + 16]).outputs["label"] for i in range(0, 64, 16)])

    def one(i):
        rows = x[i % 60 : i % 60 + 1 + i % 4]
        return i, clients[i % 8].infer("digits-mlp", rows)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(200)))
    for c in clients:
        c.close()
    for i, r in results:
        start = i % 60
        np.testing.assert_array_equal(r.outputs["label"], expected[start : start + 1 + i % 4])
    # requests were merged: some ran in a batch larger than their own rows (the batch size itself
    # is calibrated at load, so how large depends on the machine)
    assert any(r.parameters["batch_size"] > len(r.outputs["label"]) for _, r in results)


def test_model_metadata_ready_config(http, client):
    meta = http.get("/v2/models/digits-mlp").json()
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert http.get("/v2/models/digits-mlp/ready").status_code == 200
    assert http.get("/v2/models/digits-classification/ready").status_code == 200
    version = meta["versions"][0]
    assert http.get(f"/v2/models/digits-mlp/versions/{version}/ready").status_code == 200
    cfg = http.get("/v2/models/digits-mlp/config").json()
    assert cfg["max_batch_size"] == 16
    assert cfg["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [64]}]
    task_meta = http.get("/v2/models/digits-classification").json()
    assert task_meta["platform"] == "infaas_task" and len(task_meta["versions"]) == 4


def test_statistics_count_what_ran(http, client, digits_samples):
    x, _ = digits_samples
    before = http.get("/v2/models/digits-tree/stats").json()["model_stats"][0]
    for _ in range(3):
        client.infer("digits-tree", x[:5])
    after = http.get("/v2/models/digits-tree/stats").json()["model_stats"][0]
    assert after["inference_count"] - before["inference_count"] == 15
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == 3
    assert after["execution_count"] > before["execution_count"]
    assert after["batch_stats"] and after["last_inference"] > 0
    all_stats = http.get("/v2/models/stats").json()["model_stats"]
    assert len(all_stats) == 4


def test_repository_index_and_metrics(http, client, digits_samples):
    index = http.post("/v2/repository/index").json()
    assert {r["name"] for r in index} == {
        "digits-classification",
        "digits-mlp",
        "digits-logreg",
        "digits-tree",
        "digits-nb",
    }
    assert all(r["state"] == "READY" for r in index)
    client.infer("digits-nb", digits_samples[0][:3])
    text = http.get("/metrics").text
    assert 'infaas_requests_total{code="200",model="digits-nb"' in text
    assert "infaas_batch_rows_bucket" in text and 'infaas_worker_up{worker="w0"} 1.0' in text
    assert "infaas_queue_depth_requests" in text


def test_management_api_register_list_remove(client, digits_models, http, digits_samples):
    m = next(m for m in digits_models if m.name == "digits-nb")
    created = client.register(
        "digits-nb2", "digits-classification", m.onnx, validation=m.validation, description="copy"
    )
    assert created["architecture"]["accuracy_source"] == "measured"
    assert any(a["name"] == "digits-nb2" for a in client.architectures(task="digits-classification"))
    variant = client.variants("digits-nb2")[0]
    assert variant["loaded_on"] == ["w0"]  # registered while serving: loaded at once
    assert client.infer("digits-nb2", digits_samples[0][:2]).parameters["architecture"] == "digits-nb2"
    with pytest.raises(InfaasClientError) as exc:
        client.register("digits-nb2", "digits-classification", m.onnx)
    assert exc.value.status == 409
    with pytest.raises(InfaasClientError) as exc:
        client.register("x", "digits-classification", b"garbage")
    assert exc.value.status == 400 and "ONNX" in exc.value.message
    client.remove("digits-nb2")
    assert http.get("/v2/models/digits-nb2").status_code == 404
    assert any(d["kind"] == "register" for d in client.decisions())
    assert client.workers()[0]["alive"] is True


def test_openapi_schema_is_valid_and_covers_every_route(http, digits_server):
    from openapi_spec_validator import validate

    schema = http.get("/api/v1/openapi.json").json()
    validate(schema)
    documented = set(schema["paths"])
    for route in digits_server.app.routes:
        assert route.path in documented, f"{route.path} is not in the OpenAPI schema"


BAD = [
    # (path, body, headers, status, message fragment)
    (
        "/v2/models/nope/infer",
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0] * 64}]},
        {},
        404,
        "unknown model",
    ),
    (
        "/v2/models/digits-mlp/infer",
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 63], "data": [0] * 63}]},
        {},
        400,
        "shape [1, 63], expected [-1, 64]",
    ),
    (
        "/v2/models/digits-mlp/infer",
        {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 64], "data": [0] * 64}]},
        {},
        400,
        "datatype FP64, expected FP32",
    ),
    (
        "/v2/models/digits-mlp/infer",
        {"inputs": [{"name": "wrong", "datatype": "FP32", "shape": [1, 64], "data": [0] * 64}]},
        {},
        400,
        "missing input",
    ),
    (
        "/v2/models/digits-mlp/infer",
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1 << 20, 1 << 20], "data": [0]}]},
        {},
        400,
        "limit",
    ),
    (
        "/v2/models/digits-mlp/infer",
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [17, 64], "data": [0] * 17 * 64}]},
        {},
        400,
        "exceeds the largest max batch",
    ),
    (
        "/v2/models/digits-mlp/infer",
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [0, 64], "data": []}]},
        {},
        400,
        "at least 1",
    ),
    (
        "/v2/models/digits-mlp/infer",
        {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0] * 64}],
            "outputs": [{"name": "zz"}],
        },
        {},
        400,
        "unknown output",
    ),
    (
        "/v2/models/digits-mlp/infer",
        {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0] * 64}],
            "parameters": {"timeout": -3},
        },
        {},
        400,
        "timeout",
    ),
    ("/v2/models/digits-mlp/infer", b"this is not json", {}, 400, "not valid JSON"),
    ("/v2/models/digits-mlp/versions/nope/infer", {"inputs": []}, {}, 404, "no variant 'nope'"),
    (
        "/v2/models/digits-mlp/infer",
        b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], '
        b'"parameters": {"binary_data_size": 256}}]}' + b"\x00" * 100,
        {"inference-header-content-length": "110"},
        400,
        "truncated",
    ),
    (
        "/v2/models/digits-mlp/infer",
        b'{"inputs": []}',
        {"inference-header-content-length": "5000"},
        400,
        "does not fit a body",
    ),
    ("/v2/models/digits-mlp/infer", b"{}", {"content-encoding": "br"}, 400, "content-encoding"),
    ("/v2/models/digits-mlp/nothing", b"{}", {}, 404, "Not Found"),
]


@pytest.mark.parametrize(("path", "body", "headers", "status", "message"), BAD)
def test_bad_input_gets_a_v2_error_and_the_server_keeps_serving(
    http, digits_samples, path, body, headers, status, message
):
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    r = http.post(path, content=content, headers=headers)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    ok = http.post("/v2/models/digits-mlp/infer", json=json_body(digits_samples[0][:1]))
    assert ok.status_code == 200


def test_deadline_parameter_drops_requests_that_cannot_make_it(http, digits_samples):
    r = http.post("/v2/models/digits-mlp/infer", json=json_body(digits_samples[0][:1], parameters={"timeout": 1}))
    assert r.status_code == 503 and "deadline" in r.json()["error"]
    r = http.post(
        "/v2/models/digits-mlp/infer", json=json_body(digits_samples[0][:1], parameters={"timeout": 5_000_000})
    )
    assert r.status_code == 200


def test_in_process_app_without_a_socket(digits_data_dir, tmp_path, digits_samples):
    from starlette.testclient import TestClient

    from infaas.app import build
    from infaas.settings import Settings
    from tests.conftest import copy_data_dir

    data = copy_data_dir(digits_data_dir, tmp_path / "d")
    app, _, _ = build(Settings(data_dir=data, workers=1))
    with TestClient(app) as tc:
        r = tc.post("/v2/models/digits-nb/infer", json=json_body(digits_samples[0][:2]))
        assert r.status_code == 200 and len(r.json()["outputs"][0]["data"]) == 2


def test_repository_load_and_unload_place_a_variant(http, client, digits_samples):
    """Triton's repository extension: load a named variant on N workers, unload it everywhere."""

    def loaded_on(name):
        return next(v["loaded_on"] for v in client.variants("digits-logreg") if v["name"] == name)

    name = next(v["name"] for v in client.variants("digits-logreg") if v["loaded_on"] == ["w0"])
    assert client.unload_model(name) == ["w0"] and loaded_on(name) == []
    r = http.post(f"/v2/repository/models/{name}/load", json={"parameters": {"replicas": 1}})
    assert r.status_code == 200, r.text
    assert r.json()["workers"] == ["w0"] and loaded_on(name) == ["w0"]
    assert client.load_model(name) == ["w0"]  # already there: nothing more to do
    # more replicas than workers: a 400 that says how many there are
    r = http.post(f"/v2/repository/models/{name}/load", json={"parameters": {"replicas": 2}})
    assert r.status_code == 400 and "1 live worker" in r.json()["error"]
    r = http.post(f"/v2/repository/models/{name}/load", json={"parameters": {"replicas": "two"}})
    assert r.status_code == 400 and "replicas must be an integer" in r.json()["error"]
    assert http.post("/v2/repository/models/no-such-model/load").status_code == 404
    assert client.infer("digits-logreg", digits_samples[0][:2]).parameters["variant"] == name


def test_decisions_filter_by_kind_since_and_limit_and_refuse_bad_values(http, client, digits_samples):
    for _ in range(20):  # model-less queries: selections, sampled
        client.infer("digits-classification", digits_samples[0][:2], min_accuracy=0.5)
    selections = client.decisions(1000, kind="select")
    assert selections and all(d["kind"] == "select" and d["scope"] for d in selections)
    assert sum(1 + d["similar"] for d in selections) >= 20  # what was not kept is counted
    loads = client.decisions(1000, kind=["load", "register"], since="1d")
    assert loads and {d["kind"] for d in loads} <= {"load", "register"}
    newest = client.decisions(1000)[-1]["time"]
    assert all(d["time"] >= newest for d in client.decisions(1000, since=newest))
    assert len(client.decisions(2)) == 2
    for query, word in (
        ("kind=bogus", "bogus"),
        ("since=yesterday", "since"),
        ("limit=0", "limit"),
        ("limit=x", "limit"),
    ):
        r = http.get(f"/api/v1/decisions?{query}")
        assert r.status_code == 400 and word in r.json()["error"], (query, r.text)
    assert http.get("/v2/health/ready").status_code == 200


def test_metrics_follow_prometheus_conventions_and_bound_their_labels(http, client, digits_samples):
    from prometheus_client.parser import text_string_to_metric_families

    client.infer("digits-nb", digits_samples[0][:3])
    client.infer("digits-classification", digits_samples[0][:1], min_accuracy=0.5)
    for name in ("no-such-model-1", "no-such-model-2"):  # arbitrary names must not become label values
        assert http.post(f"/v2/models/{name}/infer", json=json_body(digits_samples[0][:1])).status_code == 404
    text = http.get("/metrics").text
    assert "no-such-model" not in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, family in families.items():
        assert name.startswith("infaas_"), name
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name
            elif family.type == "histogram":
                assert name.endswith(("_seconds", "_rows")), name
            else:
                assert not sample.name.endswith("_total"), sample.name
    requests = families["infaas_requests"].samples
    models = {s.labels["model"] for s in requests if s.name == "infaas_requests_total"}
    assert {"digits-nb", "digits-classification"} <= models
    assert all(m == "(unknown)" or m.startswith("digits-") for m in models), models  # registered names only
    assert {"infaas_request_duration_seconds", "infaas_batch_rows", "infaas_queue_depth_requests"} <= set(families)
    assert {"infaas_replicas", "infaas_worker_up", "infaas_worker_restarts", "infaas_decisions"} <= set(families)
    decided = {s.labels["kind"]: s.value for s in families["infaas_decisions"].samples if s.name.endswith("_total")}
    assert decided["select"] >= 1 and decided["load"] >= 1


def test_the_dashboard_files_are_served_and_nothing_else_under_them(http):
    page = http.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/dashboard/app.js" in page.text and "cdn" not in page.text.lower()
    assert http.get("/dashboard/app.js").headers["content-type"].startswith("text/javascript")
    assert http.get("/dashboard/style.css").status_code == 200
    for name in ("__init__.py", "index.html", "..%2Fopenapi.py", "nope.js"):
        assert http.get(f"/dashboard/{name}").status_code == 404, name
