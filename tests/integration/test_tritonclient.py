"""tritonclient (a client no one here wrote) against infaas over HTTP, JSON and binary."""

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


@pytest.fixture(scope="module")
def triton(digits_server):
    client = httpclient.InferenceServerClient(digits_server.url.removeprefix("http://"))
    yield client
    client.close()


def test_health_and_metadata(triton):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.get_server_metadata()["name"] == "infaas"
    assert triton.is_model_ready("digits-mlp")
    assert triton.is_model_ready("digits-classification")
    meta = triton.get_model_metadata("digits-mlp")
    assert meta["inputs"][0]["name"] == "input"
    assert triton.get_model_config("digits-mlp")["max_batch_size"] == 16
    assert "model_stats" in triton.get_inference_statistics("digits-mlp")
    assert any(m["name"] == "digits-classification" for m in triton.get_model_repository_index())


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("model", ["digits-classification", "digits-logreg"])
def test_infer_json_and_binary(triton, digits_samples, binary, model):
    x, y = digits_samples
    inp = httpclient.InferInput("input", [8, 64], "FP32")
    inp.set_data_from_numpy(x[:8], binary_data=binary)
    outputs = [httpclient.InferRequestedOutput("label", binary_data=binary),
               httpclient.InferRequestedOutput("probabilities", binary_data=binary)]  # fmt: skip
    result = triton.infer(model, [inp], outputs=outputs, request_id="r1")
    labels = result.as_numpy("label")
    assert labels.shape == (8,) and (labels == y[:8]).mean() >= 0.75
    assert result.as_numpy("probabilities").shape == (8, 10)
    response = result.get_response()
    assert response["id"] == "r1"
    assert response["parameters"]["variant"].startswith("digits-")


def test_explicit_variant_version_and_parameters(triton, digits_samples):
    version = triton.get_model_metadata("digits-tree")["versions"][0]
    inp = httpclient.InferInput("input", [2, 64], "FP32")
    inp.set_data_from_numpy(digits_samples[0][:2])
    result = triton.infer("digits-tree", [inp], model_version=version, parameters={"drop_late": True})
    assert result.get_response()["model_version"] == version


def test_errors_surface_as_inference_server_exception(triton, digits_samples):
    inp = httpclient.InferInput("input", [1, 63], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 63), np.float32))
    with pytest.raises(InferenceServerException, match=r"shape \[1, 63\], expected \[-1, 64\]"):
        triton.infer("digits-mlp", [inp])
    good = httpclient.InferInput("input", [1, 64], "FP32")
    good.set_data_from_numpy(digits_samples[0][:1])
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        triton.infer("nope", [good])
    assert triton.infer("digits-mlp", [good]).as_numpy("label").shape == (1,)
