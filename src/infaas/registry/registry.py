"""The typed registry over a metadata store and a model store."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Literal

import numpy as np

from infaas.errors import AlreadyExists, InfaasError, InvalidInput, NameConflict, NotFound
from infaas.registry.modelstore import ModelStore
from infaas.registry.onnxinfo import default_metric, load_validation, named_inputs, read_signature
from infaas.registry.scratch import scratch
from infaas.registry.store import MetadataStore, open_store
from infaas.registry.types import (
    METRICS,
    Architecture,
    Profile,
    Signature,
    Task,
    Variant,
    variant_name,
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
NameKind = Literal["task", "architecture", "variant"]


def default_threads() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 8))


def measure_accuracy(
    model_path: Path,
    signature: Signature,
    inputs: dict[str, np.ndarray],
    labels: np.ndarray,
    threads: int = 1,
    chunk: int = 256,
) -> float:
    """Top-1 accuracy of a model file on labelled data (the task metric ``top1``), measured in a fresh
    worker process: a model that crashes or runs out of memory fails its registration, not the server."""
    from infaas.protocol.isolated import call_isolated

    inputs = named_inputs(inputs, signature)
    try:
        result = call_isolated(
            {
                "op": "predict",
                "path": str(model_path),
                "threads": threads,
                "inputs": inputs,
                "signature": signature,
                "chunk": chunk,
            }
        )
    except InfaasError as exc:
        raise InvalidInput(f"model failed on its validation data: {exc.message}") from None
    predictions = np.asarray(result["predictions"])
    if len(predictions) != len(labels):
        raise InvalidInput(f"model gave {len(predictions)} answers for {len(labels)} validation rows")
    return float((predictions == labels).mean())


class Registry:
    """Tasks, architectures, variants and profiles; model files in a content-addressed store."""

    def __init__(self, store: MetadataStore, models: ModelStore) -> None:
        self.store = store
        self.models = models

    @classmethod
    def open(cls, data_dir: str | Path, store: str | None = None) -> Registry:
        """The registry in ``data_dir`` (SQLite), or in a shared store (``redis://…``) with the data
        directory as this machine's cache of model files (which then live in the store too)."""
        data_dir = Path(data_dir)
        meta = open_store(store, data_dir)
        blobs = meta if hasattr(meta, "put_blob") else None
        return cls(meta, ModelStore(data_dir / "models", blobs=blobs))

    @property
    def data_dir(self) -> Path:
        return self.models.root.parent

    def scratch(self, job: str) -> contextlib.AbstractContextManager[Path]:
        """A private temporary directory for one job, under ``<data-dir>/tmp`` (see :mod:`.scratch`)."""
        return scratch(self.data_dir, job)

    def close(self) -> None:
        self.store.close()

    # ---- lookups -------------------------------------------------------------------------
    def tasks(self) -> list[Task]:
        return [Task.model_validate(b) for b in self.store.list("task")]

    def task(self, name: str) -> Task | None:
        body = self.store.get("task", name)
        return None if body is None else Task.model_validate(body)

    def architectures(self, task: str | None = None) -> list[Architecture]:
        return [Architecture.model_validate(b) for b in self.store.list("architecture", task)]

    def architecture(self, name: str) -> Architecture | None:
        body = self.store.get("architecture", name)
        return None if body is None else Architecture.model_validate(body)

    def variants(self, architecture: str | None = None) -> list[Variant]:
        return [Variant.model_validate(b) for b in self.store.list("variant", architecture)]

    def variant(self, name: str) -> Variant | None:
        body = self.store.get("variant", name)
        return None if body is None else Variant.model_validate(body)

    def profiles(self, variant: str | None = None) -> list[Profile]:
        return [Profile.model_validate(b) for b in self.store.list("profile", variant)]

    def name_taken(self, name: str) -> NameKind | None:
        for kind in ("task", "architecture", "variant"):
            if self.store.get(kind, name) is not None:
                return kind  # type: ignore[return-value]
        return None

    # ---- writes ----------------------------------------------------------------------------
    def _program(self, program: bytes | str | Path) -> str:
        """Store a PyTorch program, the source of PyTorch's variants: its forward takes the signature's
        inputs by name and returns its outputs (a dict by name, or in order). Whether it loads is the
        generator's to find (a clear skip)."""
        data = program if isinstance(program, bytes) else Path(program).read_bytes()
        if not data.startswith(b"PK"):  # torch.export.save writes a zip archive
            raise InvalidInput("program: not a torch.export archive (.pt2, saved by torch.export.save)")
        return self.models.put_bytes(data, ".pt2")

    def register(
        self,
        name: str,
        task: str,
        model: bytes | str | Path,
        *,
        framework: str = "onnx",
        accuracy: float | None = None,
        validation: bytes | str | Path | None = None,
        calibration: bytes | str | Path | None = None,
        description: str = "",
        max_batch: int = 16,
        threads: int | None = None,
        metric: str | None = None,
        program: bytes | str | Path | None = None,
    ) -> tuple[Architecture, Variant]:
        """Register an ONNX model for a task; returns the architecture and its baseline variant.

        ``metric`` is the task's quality metric (``METRICS``); a new task without one takes
        ``default_metric`` of the signature, an existing task keeps its own. ``program``: the same
        model as a ``torch.export`` program (.pt2; :meth:`_program`)."""
        self._check_request(name, task, accuracy, max_batch, metric)
        model_bytes = model if isinstance(model, bytes) else Path(model).read_bytes()
        signature = read_signature(model_bytes)
        metric = self._task_metric(task, signature, metric, validation is not None)

        model_hash = self.models.put_bytes(model_bytes, ".onnx")
        source = "declared" if accuracy is not None else "unknown"
        validation_hash = None
        if validation is not None:
            accuracy, validation_hash = self._measured(model_hash, signature, validation, threads or 1)
            source = "measured"
        calibration_hash = None if calibration is None else self._calibration(calibration, signature)
        program_hash = None if program is None else self._program(program)

        arch = Architecture(
            name=name,
            task=task,
            framework=framework,
            accuracy=accuracy,
            accuracy_source=source,
            signature=signature,
            model_hash=model_hash,
            validation_hash=validation_hash,
            calibration_hash=calibration_hash,
            program_hash=program_hash,
            max_batch=max_batch,
            description=description,
        )
        threads = threads or default_threads()
        baseline = Variant(
            name=variant_name(name, "onnx-fp32", "cpu", threads, max_batch),
            architecture=name,
            format="onnx-fp32",
            provider="cpu",
            threads=threads,
            max_batch=max_batch,
            artifact_hash=model_hash,
            method="baseline",
            params={"graph_optimization": "all"},
            accuracy=accuracy,
            accuracy_source=source,
        )
        # the checks above ran without a lock (measuring takes seconds): repeat them where they hold,
        # inside one transaction with the writes, so two registrations of one name cannot both land
        with self.store.transaction():
            if (taken := self.name_taken(name)) is not None:
                raise NameConflict(f"name {name!r} was just taken by a {taken} (a concurrent registration)")
            if (taken := self.name_taken(task)) not in (None, "task"):
                raise NameConflict(f"task name {task!r} was just taken by a {taken}")
            current = self.task(task)
            if current is not None and (why := current.signature.compatible_with(signature)):
                raise InvalidInput(f"model does not fit task {task!r}: {why}")
            if current is None:
                self.store.put(
                    "task", task, None, Task(name=task, signature=signature, metric=metric).model_dump(mode="json")
                )  # type: ignore[arg-type]
            self.store.put("architecture", name, task, arch.model_dump(mode="json"))
            self.store.put("variant", baseline.name, name, baseline.model_dump(mode="json"))
        return arch, baseline

    def _measured(
        self, model_hash: str, signature: Signature, validation: bytes | str | Path, threads: int
    ) -> tuple[float, str]:
        """Top-1 accuracy on the labelled validation data (in an isolated process), and the data stored."""
        val_bytes = validation if isinstance(validation, bytes) else Path(validation).read_bytes()
        inputs, labels = load_validation(val_bytes)
        accuracy = measure_accuracy(self.models.path(model_hash), signature, inputs, labels, threads=threads)
        return accuracy, self.models.put_bytes(val_bytes, ".npz")

    def _calibration(self, calibration: bytes | str | Path, signature: Signature) -> str:
        """Calibration inputs checked against the signature now (not at quantization time), stored."""
        cal_bytes = calibration if isinstance(calibration, bytes) else Path(calibration).read_bytes()
        cal_inputs, _ = load_validation(cal_bytes, need_labels=False)
        named_inputs(cal_inputs, signature)
        return self.models.put_bytes(cal_bytes, ".npz")

    def _check_request(self, name: str, task: str, accuracy: float | None, max_batch: int, metric: str | None) -> None:
        """Names, ranges and the metric of a registration, before anything is read or stored."""
        for what, value in (("architecture", name), ("task", task)):
            if not NAME_RE.match(value):
                raise InvalidInput(f"bad {what} name {value!r}: letters, digits, '-' and '_', at most 64, no dots")
        if name == task:
            raise InvalidInput("an architecture cannot share its task's name")
        if (taken := self.name_taken(name)) is not None:
            raise AlreadyExists(f"name {name!r} is already taken by a {taken}")
        if (taken := self.name_taken(task)) not in (None, "task"):
            raise AlreadyExists(f"task name {task!r} is already taken by a {taken}")
        if accuracy is not None and not 0.0 <= accuracy <= 1.0:
            raise InvalidInput("accuracy must be a fraction between 0 and 1")
        if max_batch < 1:
            raise InvalidInput("max_batch must be at least 1")
        if metric is not None and metric not in METRICS:
            raise InvalidInput(f"unknown metric {metric!r}: one of {', '.join(METRICS)}")

    def _task_metric(self, task: str, signature: Signature, metric: str | None, labelled: bool) -> str:
        """The task's metric: an existing task's own (the model must fit its signature), else the
        one asked for or the signature's default; labelled validation data scores ``top1`` only."""
        existing = self.task(task)
        if existing is not None and (why := existing.signature.compatible_with(signature)):
            raise InvalidInput(f"model does not fit task {task!r}: {why}")
        if existing is not None and metric is not None and metric != existing.metric:
            raise InvalidInput(f"task {task!r} measures {existing.metric}, not {metric}")
        metric = existing.metric if existing is not None else (metric or default_metric(signature))
        if labelled and metric != "top1":
            raise InvalidInput(
                f"validation labels score top-1 accuracy; task {task!r} measures {metric} against the "
                "parent variant: register sample inputs as calibration data instead"
            )
        return metric

    def put_variant(self, variant: Variant) -> None:
        with self.store.transaction():  # not after its architecture was removed: no orphans
            if self.architecture(variant.architecture) is None:
                raise NotFound(f"unknown architecture {variant.architecture!r}")
            self.store.put("variant", variant.name, variant.architecture, variant.model_dump(mode="json"))

    def profile(self, variant: str, hardware: str | None = None) -> Profile | None:
        """A variant's profile on a hardware kind (default: this machine's kind for its provider)."""
        if hardware is None:
            from infaas.hardware import local_kind

            v = self.variant(variant)
            hardware = local_kind().for_provider(v.provider if v is not None else "cpu")
        body = self.store.get("profile", f"{variant}@{hardware}")
        return None if body is None else Profile.model_validate(body)

    def put_profile(self, profile: Profile) -> None:
        with self.store.transaction():
            if self.variant(profile.variant) is None:
                raise NotFound(f"unknown variant {profile.variant!r}")
            self.store.put(
                "profile", f"{profile.variant}@{profile.hardware}", profile.variant, profile.model_dump(mode="json")
            )

    def remove(self, architecture: str) -> None:
        """Remove an architecture, its variants and profiles; the task goes with its last architecture."""
        with self.store.transaction():  # all of it or none: no orphans after a crash
            arch = self.architecture(architecture)
            if arch is None:
                raise NotFound(f"unknown architecture {architecture!r}")
            for var in self.variants(architecture):
                for prof in self.profiles(var.name):
                    self.store.delete("profile", f"{prof.variant}@{prof.hardware}")
                self.store.delete("variant", var.name)
            self.store.delete("architecture", architecture)
            if not self.architectures(arch.task):
                self.store.delete("task", arch.task)
