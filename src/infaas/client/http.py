"""Python client for an infaas server over HTTP (KServe v2 + the /api/v1 management API)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from infaas.protocol.codec import decode_bytes_tensor, encode_bytes_tensor
from infaas.tensors import V2_TO_NUMPY, numpy_to_v2


class InfaasClientError(Exception):
    """The server answered with an error; ``status`` is the HTTP status, ``retry_after_s`` its
    Retry-After (429 and 503: when a retry may succeed)."""

    def __init__(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


@dataclass
class InferResult:
    model_name: str
    model_version: str
    outputs: dict[str, np.ndarray]
    parameters: dict[str, Any] = field(default_factory=dict)
    id: str | None = None


def only_input(model: str, meta: dict, arr: np.ndarray) -> dict[str, np.ndarray]:
    """A bare array as the model's only input, cast to its datatype (from the model's metadata)."""
    if len(meta["inputs"]) != 1:
        raise ValueError(f"{model} has {len(meta['inputs'])} inputs; pass a dict")
    spec = meta["inputs"][0]
    want = V2_TO_NUMPY[spec["datatype"]]
    if arr.dtype != want:
        if not np.can_cast(arr.dtype, want, casting="same_kind"):
            raise ValueError(f"input dtype {arr.dtype} does not fit {spec['datatype']}")
        arr = arr.astype(want)
    return {spec["name"]: arr}


def with_objectives(
    parameters: dict[str, Any] | None, latency_ms: float | None, min_accuracy: float | None, max_cost: float | None
) -> dict[str, Any]:
    """Request parameters with the objectives added (they travel as parameters on every protocol)."""
    params = dict(parameters or {})
    for key, value in (("latency_ms", latency_ms), ("min_accuracy", min_accuracy), ("max_cost", max_cost)):
        if value is not None:
            params[key] = value
    return params


class Client:
    """A persistent-connection client. ``binary=True`` sends and receives tensors as raw bytes."""

    def __init__(self, url: str = "http://127.0.0.1:8000", timeout: float = 120.0, api_key: str | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"authorization": f"Bearer {api_key}"} if api_key else None
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)
        self._signatures: dict[str, dict] = {}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- plumbing ------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise InfaasClientError(0, f"cannot reach infaas at {self.url}: {exc}") from exc
        if resp.status_code >= 400:
            try:
                message = resp.json().get("error", resp.text)
            except ValueError:
                message = resp.text or resp.reason_phrase
            retry = resp.headers.get("retry-after")
            raise InfaasClientError(resp.status_code, message, float(retry) if retry and retry.isdigit() else None)
        return resp

    def _json(self, method: str, path: str, **kwargs) -> Any:
        return self._request(method, path, **kwargs).json()

    # ---- health and metadata ---------------------------------------------------------------
    def live(self) -> bool:
        try:
            return self._http.get("/v2/health/live").status_code == 200
        except httpx.TransportError:
            return False

    def ready(self) -> bool:
        try:
            return self._http.get("/v2/health/ready").status_code == 200
        except httpx.TransportError:
            return False

    def server_metadata(self) -> dict:
        return self._json("GET", "/v2")

    def model_metadata(self, model: str, version: str | None = None) -> dict:
        return self._json("GET", _model_path(model, version))

    def model_config(self, model: str, version: str | None = None) -> dict:
        return self._json("GET", _model_path(model, version) + "/config")

    def model_ready(self, model: str, version: str | None = None) -> bool:
        return self._http.get(_model_path(model, version) + "/ready").status_code == 200

    def stats(self, model: str | None = None) -> dict:
        return self._json("GET", (_model_path(model, None) if model else "/v2/models") + "/stats")

    def repository_index(self) -> list[dict]:
        return self._json("POST", "/v2/repository/index")

    def load_model(self, model: str, replicas: int = 1) -> list[str]:
        """Load a variant (or an architecture's default) on ``replicas`` workers; the workers hosting it."""
        return self._json("POST", f"/v2/repository/models/{model}/load", json={"parameters": {"replicas": replicas}})[
            "workers"
        ]

    def unload_model(self, model: str) -> list[str]:
        """Unload a variant from every worker; the workers it left."""
        return self._json("POST", f"/v2/repository/models/{model}/unload")["workers"]

    # ---- inference ---------------------------------------------------------------------------
    def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray] | np.ndarray,
        *,
        version: str | None = None,
        parameters: dict[str, Any] | None = None,
        outputs: list[str] | None = None,
        binary: bool = True,
        request_id: str | None = None,
        latency_ms: float | None = None,
        min_accuracy: float | None = None,
        max_cost: float | None = None,
    ) -> InferResult:
        """Run an inference. A bare array goes to the model's only input, cast to its datatype.
        Objectives (``latency_ms``, ``min_accuracy``, ``max_cost`` in USD per 1000 inferences)
        travel in the request parameters; the response's parameters say what ran and why."""
        if isinstance(inputs, np.ndarray):
            meta = self._signatures.get(model) or self.model_metadata(model)
            self._signatures[model] = meta
            inputs = only_input(model, meta, inputs)
        header: dict[str, Any] = {"inputs": []}
        blobs = []
        for name, arr in inputs.items():
            arr = np.ascontiguousarray(arr)
            entry: dict[str, Any] = {"name": name, "datatype": numpy_to_v2(arr.dtype), "shape": list(arr.shape)}
            if binary:
                blob = encode_bytes_tensor(arr) if entry["datatype"] == "BYTES" else arr.tobytes()
                entry["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                entry["data"] = [x.decode() if isinstance(x, bytes) else x for x in arr.ravel().tolist()]
            header["inputs"].append(entry)
        params = with_objectives(parameters, latency_ms, min_accuracy, max_cost)
        if binary:
            params["binary_data_output"] = True
        if params:
            header["parameters"] = params
        if outputs:
            header["outputs"] = [{"name": o} for o in outputs]
        if request_id is not None:
            header["id"] = request_id
        js = orjson.dumps(header)
        headers = {"content-type": "application/octet-stream" if binary else "application/json"}
        if binary:
            headers["inference-header-content-length"] = str(len(js))
        resp = self._request(
            "POST", _model_path(model, version) + "/infer", content=b"".join([js, *blobs]), headers=headers
        )
        return decode_response(resp.content, resp.headers.get("inference-header-content-length"))

    # ---- management --------------------------------------------------------------------------
    def register(
        self,
        name: str,
        task: str,
        model: str | Path | bytes,
        *,
        accuracy: float | None = None,
        validation: str | Path | bytes | None = None,
        calibration: str | Path | bytes | None = None,
        description: str = "",
        framework: str = "onnx",
        max_batch: int | None = None,
        metric: str | None = None,
        program: str | Path | bytes | None = None,
    ) -> dict:
        def read(x):
            return x if isinstance(x, bytes) else Path(x).read_bytes()

        files = {"model": ("model.onnx", read(model), "application/octet-stream")}
        if validation is not None:
            files["validation"] = ("validation.npz", read(validation), "application/octet-stream")
        if calibration is not None:
            files["calibration"] = ("calibration.npz", read(calibration), "application/octet-stream")
        if program is not None:
            files["program"] = ("model.pt2", read(program), "application/octet-stream")
        data = {"name": name, "task": task, "framework": framework, "description": description}
        if accuracy is not None:
            data["accuracy"] = str(accuracy)
        if max_batch is not None:
            data["max_batch"] = str(max_batch)
        if metric is not None:
            data["metric"] = metric
        return self._json("POST", "/api/v1/architectures", data=data, files=files)

    def profile(self, architecture: str, quick: bool = False) -> dict:
        """Start (or join) the background profiling of an architecture; returns its progress."""
        return self._json("POST", f"/api/v1/architectures/{architecture}/profile", json={"quick": quick})

    def profiling(self, architecture: str) -> dict:
        return self._json("GET", f"/api/v1/architectures/{architecture}/profile")

    def remove(self, architecture: str) -> None:
        self._request("DELETE", f"/api/v1/architectures/{architecture}")

    def tasks(self) -> list[dict]:
        return self._json("GET", "/api/v1/tasks")

    def architectures(self, task: str | None = None) -> list[dict]:
        return self._json("GET", "/api/v1/architectures", params={"task": task} if task else None)

    def variants(self, architecture: str | None = None) -> list[dict]:
        params = {"architecture": architecture} if architecture else None
        return self._json("GET", "/api/v1/variants", params=params)

    def workers(self) -> list[dict]:
        return self._json("GET", "/api/v1/workers")

    def decisions(
        self, limit: int = 100, kind: str | list[str] | None = None, since: float | str | None = None
    ) -> list[dict]:
        """Decisions with their reasons, oldest first: the newest ``limit``, of ``kind`` (one, a list,
        or comma-separated; ``select`` for sampled query selections), at or after ``since`` (Unix time,
        ISO 8601, or a span back such as ``"10m"``)."""
        params: dict[str, object] = {"limit": limit}
        if kind:
            params["kind"] = kind if isinstance(kind, str) else ",".join(kind)
        if since is not None:
            params["since"] = since
        return self._json("GET", "/api/v1/decisions", params=params)

    def frontends(self) -> dict:
        """The frontends of this deployment and which one runs the controller (its lease and token)."""
        return self._json("GET", "/api/v1/frontends")

    def autoscale(self) -> dict:
        """The autoscaler's limits, each worker's CPU and memory, and each variant's state."""
        return self._json("GET", "/api/v1/autoscale")

    # ---- offline jobs --------------------------------------------------------------------------
    def submit_job(
        self,
        model: str,
        inputs: dict[str, np.ndarray] | str | Path | None = None,
        *,
        directory: str | None = None,
        min_accuracy: float | None = None,
    ) -> dict:
        """Submit a batch job: ``inputs`` (arrays by input name, or an .npz file) or a ``directory`` of
        images on the server. Returns the job record (``id``, ``status``, ``progress`` ...)."""
        params: dict[str, Any] = {"model": model}
        if min_accuracy is not None:
            params["min_accuracy"] = min_accuracy
        if directory is not None:
            return self._json("POST", "/api/v1/jobs", json={**params, "directory": directory})
        if isinstance(inputs, str | Path):
            body = Path(inputs).read_bytes()
        else:
            buf = io.BytesIO()
            np.savez(buf, **(inputs or {}))
            body = buf.getvalue()
        return self._json(
            "POST", "/api/v1/jobs", params=params, content=body, headers={"Content-Type": "application/octet-stream"}
        )

    def job(self, job_id: str) -> dict:
        return self._json("GET", f"/api/v1/jobs/{job_id}")

    def jobs(self) -> list[dict]:
        return self._json("GET", "/api/v1/jobs")

    def cancel_job(self, job_id: str) -> dict:
        return self._json("DELETE", f"/api/v1/jobs/{job_id}")

    def job_result(self, job_id: str) -> dict[str, np.ndarray]:
        body = self._request("GET", f"/api/v1/jobs/{job_id}/result").content
        with np.load(io.BytesIO(body), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}


def _model_path(model: str, version: str | None) -> str:
    return f"/v2/models/{model}" + (f"/versions/{version}" if version else "")


def decode_response(body: bytes, header_length: str | None) -> InferResult:
    """Parse a v2 response body (JSON, or JSON followed by binary outputs)."""
    json_len = int(header_length) if header_length else len(body)
    header = orjson.loads(body[:json_len])
    pos = json_len
    outputs = {}
    for out in header.get("outputs", []):
        dtype, shape = out["datatype"], tuple(out["shape"])
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            chunk = body[pos : pos + size]
            pos += size
            count = int(np.prod(shape))
            arr = (
                decode_bytes_tensor(memoryview(chunk), count, out["name"])
                if dtype == "BYTES"
                else np.frombuffer(chunk, dtype=V2_TO_NUMPY[dtype])
            ).reshape(shape)
        else:
            data = out["data"]
            if dtype.startswith("FP") and None in data:  # JSON has no Inf/NaN: null stands for them
                data = [np.nan if v is None else v for v in data]
            arr = np.asarray(data, dtype=V2_TO_NUMPY[dtype]).reshape(shape)
        outputs[out["name"]] = arr
    return InferResult(
        header.get("model_name", ""),
        header.get("model_version", ""),
        outputs,
        header.get("parameters") or {},
        header.get("id"),
    )
