"""End to end, as a user would: the ``infaas`` command in subprocesses against a real server."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from infaas.app import free_port

INFAAS = [sys.executable, "-m", "infaas.cli"]


def run(*args, check=True, timeout=180, env=None):
    proc = subprocess.run(
        [*INFAAS, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"infaas {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = tmp_path_factory.mktemp("cli-data")
    port, grpc_port = free_port(), free_port()
    proc = subprocess.Popen(
        [*INFAAS, "serve", "--port", str(port), "--grpc-port", str(grpc_port), "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proc.grpc_url = f"grpc://127.0.0.1:{grpc_port}"
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(300):
        try:
            if httpx.get(url + "/v2/health/ready").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read())
        time.sleep(0.1)
    yield url, data, proc
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.slow
def test_serve_zoo_add_models_infer(served, tmp_path, digits_samples):
    url, _, _ = served
    out = run("zoo", "add", "digits", "--url", url, "--json")
    registered = json.loads(out.stdout)
    assert {r["architecture"]["name"] for r in registered} == {
        "digits-logreg",
        "digits-mlp",
        "digits-tree",
        "digits-nb",
    }
    assert all(r["architecture"]["accuracy_source"] == "measured" for r in registered)

    models = json.loads(run("models", "--url", url, "--json").stdout)
    for arch in registered:  # each architecture serves from one loaded variant ...
        assert any(v["loaded_on"] for v in models["variants"] if v["architecture"] == arch["architecture"]["name"])
    # ... and `zoo add` waited for its family to be generated and profiled: measured accuracy everywhere
    profiled = [v for v in models["variants"] if v["status"] in ("ready", "rejected")]
    assert len(profiled) > 4 * 4
    assert all(v["accuracy_source"] == "measured" for v in profiled)
    table = run("models", "--url", url).stdout
    assert "digits-classification" in table and "measured" in table and "loaded on w0" in table

    x, y = digits_samples
    np.save(tmp_path / "x.npy", x[:5].astype(np.float64))  # the client casts to the model's FP32
    res = json.loads(
        run(
            "infer",
            "digits-classification",
            "--input",
            str(tmp_path / "x.npy"),
            "--url",
            url,
            "--json",
            "--param",
            "timeout=5000000",
        ).stdout
    )
    assert res["outputs"]["label"] == y[:5].tolist() or np.mean(np.array(res["outputs"]["label"]) == y[:5]) >= 0.8
    assert res["parameters"]["architecture"] == "digits-mlp"
    pretty = run(
        "infer", "digits-tree", "--input", str(tmp_path / "x.npy"), "--url", url, "--output", str(tmp_path / "out.npz")
    ).stdout
    assert "why" in pretty and "digits-tree" in pretty
    with np.load(tmp_path / "out.npz") as saved:
        assert saved["label"].shape == (5,)

    # objectives from the command line: the policy picks, and says what it predicted and why
    res = json.loads(
        run(
            "infer",
            "digits-classification",
            "--input",
            str(tmp_path / "x.npy"),
            "--url",
            url,
            "--min-accuracy",
            "0.97",
            "--latency-ms",
            "2000",
            "--json",
        ).stdout
    )
    assert res["parameters"]["architecture"] == "digits-mlp" and res["parameters"]["predicted_ms"] > 0
    proc = run(
        "infer",
        "digits-classification",
        "--input",
        str(tmp_path / "x.npy"),
        "--url",
        url,
        "--min-accuracy",
        "0.999",
        check=False,
    )
    assert proc.returncode == 1 and "error 400" in proc.stderr and "unreachable" in proc.stderr
    # the same query over KServe v2 gRPC gives the same answer (perhaps from another variant meeting it)
    over_grpc = json.loads(
        run(
            "infer",
            "digits-classification",
            "--input",
            str(tmp_path / "x.npy"),
            "--url",
            served[2].grpc_url,
            "--min-accuracy",
            "0.97",
            "--json",
        ).stdout
    )
    assert over_grpc["outputs"]["label"] == res["outputs"]["label"]
    assert over_grpc["parameters"]["architecture"] == "digits-mlp" and over_grpc["parameters"]["accuracy"] >= 0.97
    proc = run("infer", "nope", "--input", str(tmp_path / "x.npy"), "--url", served[2].grpc_url, check=False)
    assert proc.returncode == 1 and "error 404" in proc.stderr and "unknown model 'nope'" in proc.stderr
    proc = run("models", "--url", served[2].grpc_url, check=False)
    assert proc.returncode == 2 and "give an http:// URL" in proc.stderr
    assert "w0" in run("workers", "--url", url).stdout
    decisions = run("decisions", "--url", url).stdout
    assert "loaded digits-mlp" in decisions and "select" in decisions
    variants = json.loads(run("variants", "digits-mlp", "--url", url, "--json").stdout)
    assert {v["format"] for v in variants} >= {"onnx-fp32", "onnx-int8-static", "onnx-int8-dynamic"}
    assert all(v["profile"]["latency_p50_ms"]["1"] > 0 for v in variants if v["status"] != "failed")
    table = run("variants", "digits-tree", "--url", url).stdout
    assert "p50@1/max" in table and "µ$/1k" in table and "0.4" in table  # digits-tree: measured ~0.48
    # the repository extension from the command line: load a chosen variant, then unload it
    # an INT8 form where this CPU keeps one (an AVX2-only CPU can reject them all), else another ready form
    ready = [v["name"] for v in variants if v["status"] == "ready" and v["name"] != res["parameters"]["variant"]]
    int8 = next((n for n in ready if "int8" in n), ready[0])
    assert "w0" in run("load", int8, "--url", url).stdout
    assert int8 in json.loads(run("workers", "--url", url, "--json").stdout)["workers"][0]["replicas"]
    assert "unloaded from w0" in run("unload", int8, "--url", url).stdout
    assert "was not loaded" in run("unload", int8, "--url", url).stdout
    proc = run("load", "nope", "--url", url, check=False)
    assert proc.returncode == 1 and "error 404" in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_json_infer(served, digits_samples):
    url, _, _ = served
    run("zoo", "add", "digits", "--url", url, "--no-wait", check=False)  # idempotent for this test's needs
    x = digits_samples[0][:2]
    body = json.dumps({"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": x.ravel().tolist()}]})
    out = subprocess.run(
        [
            "curl",
            "-sf",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            f"{url}/v2/models/digits-classification/infer",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    resp = json.loads(out.stdout)
    assert {o["name"] for o in resp["outputs"]} == {"label", "probabilities"}


@pytest.mark.slow
def test_client_errors_are_readable(served, tmp_path):
    url, _, _ = served
    np.save(tmp_path / "bad.npy", np.zeros((1, 3), np.float32))
    run("zoo", "add", "digits", "--url", url, "--no-wait", check=False)
    proc = run("infer", "digits-mlp", "--input", str(tmp_path / "bad.npy"), "--url", url, check=False)
    assert proc.returncode == 1 and "error 400" in proc.stderr and "expected [-1, 64]" in proc.stderr
    free = free_port()
    proc = run("models", "--url", f"http://127.0.0.1:{free}", check=False)
    assert proc.returncode == 1 and "cannot reach infaas" in proc.stderr


@pytest.mark.slow
def test_register_offline_into_a_data_dir_then_serve(tmp_path, digits_models):
    m = next(m for m in digits_models if m.name == "digits-nb")
    (tmp_path / "m.onnx").write_bytes(m.onnx)
    (tmp_path / "v.npz").write_bytes(m.validation)
    out = run(
        "register",
        "nb",
        "--task",
        "digits",
        "--model",
        str(tmp_path / "m.onnx"),
        "--no-wait",
        "--validation",
        str(tmp_path / "v.npz"),
        "--data-dir",
        str(tmp_path / "d"),
        "--json",
    ).stdout
    arch = json.loads(out)[0]["architecture"]
    assert arch["accuracy_source"] == "measured" and arch["accuracy"] > 0.8
    proc = run(
        "register",
        "nb",
        "--task",
        "digits",
        "--model",
        str(tmp_path / "m.onnx"),
        "--data-dir",
        str(tmp_path / "d"),
        check=False,
    )
    assert proc.returncode == 1 and "already taken" in proc.stderr
    # profiling offline, in the CLI's process, into the same data directory
    variants = json.loads(run("profile", "nb", "--quick", "--data-dir", str(tmp_path / "d"), "--json").stdout)
    assert {v["status"] for v in variants} <= {"ready", "rejected", "failed"}
    assert all(v["profile"] and v["accuracy_source"] == "measured" for v in variants if v["status"] != "failed")


@pytest.mark.slow
def test_demo_runs_end_to_end():
    out = run("demo", "--queries", "40", "--concurrency", "4", timeout=300).stdout
    assert "architectures of task digits-classification and their variants" in out and "what ran" in out
    assert "rejected" in out  # the family was generated and judged
    assert "digits-classification" in out and "why" in out
    assert "10/10" in out
