"""tritonclient (a client no one here wrote) against infaas: HTTP JSON, HTTP binary, and gRPC."""

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

PROTOCOLS = ["http-json", "http-binary", "grpc"]


class Triton:
    """One test body for both of tritonclient's protocols (their APIs differ in small ways)."""

    def __init__(self, protocol: str, server) -> None:
        self.protocol = protocol
        self.grpc = protocol == "grpc"
        self.binary = protocol != "http-json"
        self.lib = grpcclient if self.grpc else httpclient
        url = server.grpc_url if self.grpc else server.url.removeprefix("http://")
        self.client = self.lib.InferenceServerClient(url)

    def json(self, method: str, *args, **kwargs):
        if self.grpc:
            kwargs["as_json"] = True
        return getattr(self.client, method)(*args, **kwargs)

    def input(self, x: np.ndarray):
        inp = self.lib.InferInput("input", list(x.shape), "FP32")
        if self.grpc:
            inp.set_data_from_numpy(x)
        else:
            inp.set_data_from_numpy(x, binary_data=self.binary)
        return inp

    def outputs(self):
        if self.grpc:
            return [self.lib.InferRequestedOutput("label"), self.lib.InferRequestedOutput("probabilities")]
        return [self.lib.InferRequestedOutput(n, binary_data=self.binary) for n in ("label", "probabilities")]

    def params(self, result) -> dict:
        """The response parameters as plain values (gRPC wraps each in an InferParameter)."""
        raw = result.get_response(as_json=True) if self.grpc else result.get_response()
        params = raw.get("parameters", {})
        if self.grpc:
            return {k: next(iter(v.values())) for k, v in params.items()}
        return params


@pytest.fixture(scope="module", params=PROTOCOLS)
def triton(request, digits_server):
    t = Triton(request.param, digits_server)
    yield t
    t.client.close()


def test_health_and_metadata(triton):
    c = triton.client
    assert c.is_server_live() and c.is_server_ready()
    assert triton.json("get_server_metadata")["name"] == "infaas"
    assert c.is_model_ready("digits-mlp") and c.is_model_ready("digits-classification")
    meta = triton.json("get_model_metadata", "digits-mlp")
    assert meta["inputs"][0]["name"] == "input" and meta["inputs"][0]["shape"] in ([-1, 64], ["-1", "64"])
    config = triton.json("get_model_config", "digits-mlp")
    config = config.get("config", config)
    assert int(config["max_batch_size"]) == 16 and config["input"][0]["data_type"] == "TYPE_FP32"
    assert "model_stats" in triton.json("get_inference_statistics", "digits-mlp")
    index = triton.json("get_model_repository_index")
    models = index["models"] if isinstance(index, dict) else index
    assert any(m["name"] == "digits-classification" for m in models)


@pytest.mark.parametrize("model", ["digits-classification", "digits-logreg"])
def test_infer(triton, digits_samples, model):
    x, y = digits_samples
    result = triton.client.infer(model, [triton.input(x[:8])], outputs=triton.outputs(), request_id="r1")
    labels = result.as_numpy("label")
    assert labels.shape == (8,) and (labels == y[:8]).mean() >= 0.75
    assert result.as_numpy("probabilities").shape == (8, 10)
    assert result.get_response(as_json=True)["id"] == "r1" if triton.grpc else result.get_response()["id"] == "r1"
    params = triton.params(result)
    assert params["variant"].startswith(model if model != "digits-classification" else "digits-")
    assert params["reason"] and params["worker"] == "w0"


def test_outputs_equal_across_protocols(digits_server, digits_samples):
    x = digits_samples[0][:16]
    answers = []
    for protocol in PROTOCOLS:
        t = Triton(protocol, digits_server)
        answers.append(t.client.infer("digits-logreg", [t.input(x)], outputs=t.outputs()).as_numpy("probabilities"))
        t.client.close()
    np.testing.assert_allclose(answers[0], answers[2], rtol=1e-6)  # JSON text round trip vs raw bytes
    np.testing.assert_array_equal(answers[1], answers[2])  # binary HTTP and gRPC: the same bytes


def test_explicit_variant_version_and_parameters(triton, digits_samples):
    version = triton.json("get_model_metadata", "digits-tree")["versions"][0]
    result = triton.client.infer(
        "digits-tree", [triton.input(digits_samples[0][:2])], model_version=version, parameters={"drop_late": True}
    )
    response = result.get_response(as_json=True) if triton.grpc else result.get_response()
    assert response["model_version"] == version


def objective(value: float, triton: Triton):
    """tritonclient's gRPC client before 2.4x cannot send float parameters; a numeric string works
    with every version (infaas parses it), so that is what gRPC sends here."""
    return str(value) if triton.grpc else value


def test_model_less_query_with_objectives(triton, digits_samples):
    result = triton.client.infer(
        "digits-classification",
        [triton.input(digits_samples[0][:4])],
        parameters={"min_accuracy": objective(0.97, triton)},
    )
    params = triton.params(result)
    assert params["variant"].startswith("digits-mlp") and "0.97" in params["reason"]
    with pytest.raises(InferenceServerException, match="min_accuracy 0.999 unreachable") as exc:
        triton.client.infer(
            "digits-classification",
            [triton.input(digits_samples[0][:1])],
            parameters={"min_accuracy": objective(0.999, triton)},
        )
    if triton.grpc:
        assert exc.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_errors_surface_as_inference_server_exception(triton, digits_samples):
    with pytest.raises(InferenceServerException, match=r"shape \[1, 63\], expected \[-1, 64\]") as exc:
        triton.client.infer("digits-mlp", [triton.input(np.zeros((1, 63), np.float32))])
    if triton.grpc:
        assert exc.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match="unknown model 'nope'") as exc:
        triton.client.infer("nope", [triton.input(digits_samples[0][:1])])
    if triton.grpc:
        assert exc.value.status() == "StatusCode.NOT_FOUND"
    # the server keeps serving
    assert triton.client.infer("digits-mlp", [triton.input(digits_samples[0][:1])]).as_numpy("label").shape == (1,)


def test_infaas_grpc_client_matches_rest(digits_server, digits_samples):
    from infaas.client import Client, GrpcClient, InfaasClientError

    x = digits_samples[0][:5]
    with GrpcClient("grpc://" + digits_server.grpc_url) as g, Client(digits_server.url) as h:
        assert g.live() and g.ready() and g.model_ready("digits-mlp")
        assert g.server_metadata()["name"] == "infaas"
        assert g.model_metadata("digits-mlp")["inputs"][0]["shape"] == [-1, 64]
        a = g.infer("digits-classification", x.astype(np.float64), min_accuracy=0.97, request_id="g1")
        b = h.infer("digits-classification", x, min_accuracy=0.97)
        np.testing.assert_array_equal(a.outputs["probabilities"], b.outputs["probabilities"])
        assert a.id == "g1" and a.parameters["variant"] == b.parameters["variant"]
        assert a.parameters["reason"].startswith("task digits-classification")
        with pytest.raises(InfaasClientError) as exc:
            g.infer("digits-mlp", np.zeros((1, 63), np.float32))
        assert exc.value.status == 400 and "expected [-1, 64]" in exc.value.message
