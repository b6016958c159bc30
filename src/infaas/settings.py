"""One settings tree for the whole system (env prefix ``INFAAS_``).

Precedence: defaults < settings file (``INFAAS_CONFIG`` or ``--config``) < environment < CLI flags.
Pass the resulting object explicitly; nothing reads the environment anywhere else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# lists from the environment are comma-separated (INFAAS_API_KEYS=key1,key2), not JSON
CommaList = Annotated[list[str], NoDecode]


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "infaas"


class Settings(BaseSettings):
    """Everything configurable in infaas."""

    model_config = SettingsConfigDict(env_prefix="INFAAS_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    url: str = "http://127.0.0.1:8000"

    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = Field(None, description="KServe v2 gRPC port (Triton's is 8001); unset: no gRPC")

    workers: int = Field(1, ge=1, description="worker processes (or Ray actors) to start")
    cluster: Literal["local", "ray"] = Field(
        "local", description="where workers run: processes on this machine, or Ray actors on a Ray cluster"
    )
    ray_address: str | None = Field(
        None, description="Ray cluster to join (e.g. 10.0.0.1:6379 or auto); unset: a local Ray started by this server"
    )
    ray_namespace: str = Field("infaas", description="Ray namespace of the worker actors (one per deployment)")
    ray_node_ip: str | None = Field(
        None, description="this frontend's address in the Ray cluster (e.g. 127.0.0.1 for a one-machine cluster)"
    )
    node_host: str | None = Field(
        None,
        description="address each Ray actor's request listener binds (a node's own INFAAS_NODE_HOST wins); "
        "unset: the node's address in the Ray cluster",
    )
    node_ports: str = Field(
        "", description="port range of the actors' request listeners, e.g. 41000-41099 (for a firewall); empty: any"
    )
    store: str = Field(
        "sqlite",
        description="metadata store: sqlite (in the data directory) or "
        "redis://host:port/db, shared by several frontends",
    )
    lease_s: float = Field(
        5.0, gt=0, description="controller lease: another frontend takes over within this long after the leader dies"
    )
    cores_per_worker: int = Field(0, ge=0, description="0: split this machine's cores evenly")
    default_max_batch: int = Field(16, ge=1)
    runtimes: CommaList = Field(
        default_factory=lambda: ["onnxruntime", "openvino", "pytorch"],
        description="runtimes whose variants registration generates (onnxruntime always; openvino when "
        "installed; pytorch for architectures registered with a PyTorch program)",
    )
    instances_per_variant: int = Field(
        1, ge=1, description="runtime instances per loaded variant, sharing its queue and the worker's cores"
    )
    max_queue_delay_us: int = Field(
        0, ge=0, description="longest a batch waits for more requests once the runtime is idle"
    )
    request_timeout_s: float = Field(
        60.0, gt=0, description="ceiling on any request's deadline, and the longest wait a queue may hold"
    )
    default_timeout_s: float = Field(
        10.0, gt=0, description="deadline of a request with neither latency_ms nor timeout"
    )
    deadline_grace_s: float = Field(
        0.25, ge=0, description="how long past its deadline the frontend waits for a batch already running"
    )
    max_queue_bytes: int = Field(512 * 2**20, ge=1, description="tensor bytes one variant's queue may hold")
    admission_control: bool = Field(
        True,
        description="refuse at once (429) what cannot finish by its deadline; off: queue it, drop it at the deadline",
    )
    max_request_elements: int = Field(
        64 * 1024 * 1024, ge=1, description="largest tensor (elements) a request may declare"
    )
    max_request_bytes: int = Field(
        256 * 1024 * 1024, ge=1, description="largest inference body or gRPC message, after decompression"
    )
    max_management_bytes: int = Field(
        512 * 1024 * 1024, ge=1, description="largest management body (model uploads, job inputs)"
    )
    max_inflight_requests: int = Field(
        512,
        ge=1,
        description="inference requests in flight through one door (REST, gRPC); past it: 503 at once, body unread",
    )
    max_loop_lag_ms: float = Field(
        250.0,
        gt=0,
        description="refuse new inference requests (503, body unread) while the event loop runs this late",
    )
    door_throttle: bool = Field(
        True,
        description="while a model's workers refuse some of its requests, the door holds its requests in flight to a "
        "limit learned from their answers (refusals, queue waits) and refuses the rest (429, body unread)",
    )
    door_throttle_busy: float = Field(
        0.5,
        ge=0.0,
        description="the door's throttle refuses only while the frontend's process used this share of a core "
        "over the last second (otherwise a request the workers would refuse costs it next to nothing)",
    )
    max_connections: int = Field(
        1024, ge=1, description="concurrent HTTP connections (REST) and RPCs (gRPC); past it: 503 / RESOURCE_EXHAUSTED"
    )
    api_keys: CommaList = Field(default_factory=list, description="bearer tokens for inference; empty: open")
    management_api_keys: CommaList = Field(
        default_factory=list, description="bearer tokens for the management API; empty: the inference keys"
    )
    management_host: str | None = Field(None, description="serve the management API on its own listener")
    management_port: int | None = Field(None, description="port of the management listener (0: any free)")
    job_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="directories a directory job may read (empty: directory jobs are off)"
    )
    api_key: str | None = Field(None, description="the key the CLI and client send (env INFAAS_API_KEY)")
    worker_start_timeout_s: float = 30.0
    ort_allow_spinning: bool = Field(False, description="ORT intra-op spin-waiting; off leaves CPU to the frontend")
    decision_log_size: int = 1000

    # autoscaling (the controller)
    autoscale: bool = Field(
        True, description="run the controller: replicate, upgrade, downgrade, unload, add/remove workers"
    )
    policy: Literal["infaas", "infaas-original"] = Field(
        "infaas", description="selection and scaling rules: ours, or the original INFaaS's (a contender)"
    )
    autoscale_interval_s: float = Field(1.0, gt=0, description="controller period")
    autoscale_window: int = Field(5, ge=1, description="samples per variant the controller keeps")
    min_workers: int = Field(0, ge=0, description="0: the number of workers started (--workers)")
    max_workers: int = Field(0, ge=0, description="0: as many as this machine's cores allow")
    scale_down_s: float = Field(
        10.0, gt=0, description="load must stay low this long (or 5x the variant's load time) before scaling down"
    )
    idle_unload_s: float = Field(60.0, gt=0, description="unload a variant idle this long")
    keep_warm: bool = Field(True, description="an idle architecture keeps one variant loaded")
    worker_memory_mb: float = Field(0.0, ge=0, description="memory budget per worker; 0: RAM / max workers")
    # offline jobs
    job_batch_rows: int = Field(
        16, ge=1, description="rows per batch of an offline job (at most a variant's max batch)"
    )
    job_max_failures: int = Field(5, ge=1, description="a job failing this many batches in a row is marked failed")

    # variants and profiling
    profile_on_register: bool = Field(True, description="generate and profile variants after registration")
    max_accuracy_drop: float = Field(
        0.02,
        ge=0,
        description="reject variants whose loss against their parent, in the task's metric, may exceed "
        "this (one-sided 95 % upper bound)",
    )
    eval_rows: int = Field(2048, ge=1, description="evaluation inputs per variant (at most; what is registered)")
    profile_axis_size: int = Field(
        128,
        ge=1,
        description="representative size of a dynamic axis (e.g. sequence "
        "length) for inputs synthesized from the signature",
    )
    quant_search_s: float = Field(
        300.0,
        ge=0,
        description="time budget per quantized format for searching "
        "recipes when the default one loses more than the bound (0: no search)",
    )
    dominance_margin: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="a variant is dominated only by one better by "
        "more than this fraction on some count (timings closer than this are noise)",
    )
    timing_floor_ms: float = Field(
        0.05,
        ge=0,
        description="timings of one call closer than this are noise (microsecond models): never a reason to reject",
    )
    # prices (USD per hour), for cost per 1000 inferences. Defaults: AWS EC2 on-demand, us-east-1:
    # c5.large $0.085/h for 2 vCPUs -> $0.0425 per vCPU-hour; g4dn.xlarge (1 T4) $0.526/h.
    price_cpu_core_hour: float = 0.0425
    price_gpu_hour: float = 0.526

    @field_validator("node_ports")
    @classmethod
    def _port_range(cls, value: str) -> str:
        if value:
            low, sep, high = value.partition("-")
            if not (sep and low.isdigit() and high.isdigit() and 0 < int(low) <= int(high) < 65536):
                raise ValueError(f"node_ports must look like 41000-41099, not {value!r}")
        return value

    @field_validator("api_keys", "management_api_keys", "job_roots", "runtimes", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("runtimes")
    @classmethod
    def _known_runtimes(cls, value: list[str]) -> list[str]:
        from infaas.registry.types import RUNTIMES

        unknown = [r for r in value if r not in RUNTIMES]
        if unknown:
            raise ValueError(f"unknown runtime(s) {', '.join(unknown)}: one of {', '.join(RUNTIMES)}")
        return value

    def port_range(self) -> tuple[int, int]:
        """``node_ports`` as (low, high); (0, 0): any free port."""
        if not self.node_ports:
            return (0, 0)
        low, _, high = self.node_ports.partition("-")
        return int(low), int(high)

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given non-None values applied (CLI flags)."""
        values = {k: v for k, v in overrides.items() if v is not None}
        return self.model_copy(update=values)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings: file < environment < explicit overrides."""
    path = config_file or os.environ.get("INFAAS_CONFIG")
    file_values: dict[str, Any] = {}
    if path:
        file_values = json.loads(Path(path).read_text())
    env_settings = Settings()
    env_set = {name for name in Settings.model_fields if f"INFAAS_{name.upper()}" in os.environ}
    merged = {k: v for k, v in file_values.items() if k not in env_set}
    base = env_settings.model_copy(update=Settings(**merged).model_dump(include=set(merged)))
    return base.with_overrides(**overrides)
