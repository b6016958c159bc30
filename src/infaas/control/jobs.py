"""Offline (batch) jobs: inputs in a file, run in batches at low priority on spare capacity.

A job's inputs are saved under ``<data dir>/jobs/<id>/inputs.npz`` and its record in the metadata
store. The runner takes one batch at a time, through the same router as online queries
(selection with the job's ``min_accuracy``: the cheapest variant that qualifies), marked offline:
workers queue online requests ahead of it and the autoscaler does not count it as demand. While an
online variant is overloaded, jobs pause. Batches never exceed the smallest max batch in the job's
scope. Each completed batch is written (and fsynced) to its own file before the record advances,
so a restarted server resumes a job from its last completed batch; at the end the parts are merged
into ``outputs.npz`` (written to a temporary file, fsynced, renamed), the record is marked done,
and only then are the parts removed. A job whose batches fail ``job_max_failures`` times in a row
is marked failed with the reason, and the queue moves on. A cancel always wins: the runner never
writes over a cancelled record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field

from infaas.errors import InfaasError, InvalidInput, NotFound
from infaas.protocol.types import InferInput, InferRequest
from infaas.protocol.validate import check_inputs
from infaas.registry import Signature
from infaas.registry.store import unreachable
from infaas.tensors import NUMPY_TO_V2

if TYPE_CHECKING:
    from infaas.control.ports import InferencePort
    from infaas.decisions import DecisionLog
    from infaas.registry.store import MetadataStore

log = logging.getLogger("infaas.jobs")

ACTIVE = ("queued", "running", "paused")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class Job(BaseModel):
    id: str
    model: str  # a task, an architecture or a variant
    min_accuracy: float | None = None
    status: str = "queued"  # queued | running | paused | done | failed | cancelled
    rows: int
    done_rows: int = 0
    batch_rows: int
    created: float = Field(default_factory=time.time)
    updated: float = Field(default_factory=time.time)
    finished: float | None = None
    reason: str = ""  # why it is paused, failed, ...
    pauses: int = 0
    paused_s: float = 0.0
    variants: dict[str, int] = Field(default_factory=dict)  # rows served by each variant
    segments: list[tuple[int, int, str]] = Field(default_factory=list)  # [start, end) rows -> variant
    files: list[str] = Field(default_factory=list)  # for directory jobs: the image file of each row
    error: str | None = None
    failures: int = 0  # batches failed in a row

    @property
    def progress(self) -> float:
        return self.done_rows / self.rows if self.rows else 1.0


def allowed_directory(directory: str, roots: list[Path]) -> Path:
    """The real path of ``directory`` if it lies under one of ``roots`` (symlinks resolved); else one
    error that says the same whether the path exists or not (no oracle for the server's files)."""
    if not roots:
        raise InvalidInput("directory jobs are off on this server: start it with --job-root DIR")
    refused = InvalidInput(f"directory {directory!r} is not a readable directory under the server's job roots")
    try:
        path = Path(directory)
        real = path.resolve(strict=True) if path.is_absolute() else None
        if real is None:
            real = next(((r / path).resolve(strict=True) for r in roots if (r / path).exists()), None)
        if real is None or not real.is_dir():
            raise refused
    except (OSError, RuntimeError, ValueError):
        raise refused from None
    for root in roots:
        with contextlib.suppress(OSError, RuntimeError):
            if real.is_relative_to(Path(root).resolve(strict=True)):
                return real
    raise refused


def load_images(
    directory: str | Path, sig: Signature, limit_bytes: int | None = None
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Images of a directory (sorted by name), resized to the task's single NHWC UINT8 input."""
    from PIL import Image

    if len(sig.inputs) != 1 or sig.inputs[0].datatype != "UINT8" or len(sig.inputs[0].shape) != 4:
        raise InvalidInput("a directory of images needs a task with one UINT8 input shaped [N, H, W, C]")
    spec = sig.inputs[0]
    _, height, width, channels = spec.shape
    if min(height, width) < 1 or channels not in (1, 3):
        raise InvalidInput(f"input '{spec.name}' has free image dimensions {list(spec.shape)}: send an .npz")
    root = Path(directory)
    if not root.is_dir():
        raise InvalidInput(f"not a directory on the server: {directory}")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InvalidInput(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {directory}")
    mode = "RGB" if channels == 3 else "L"
    if limit_bytes is not None and len(files) * height * width * channels > limit_bytes:
        raise InvalidInput(
            f"{len(files)} images of {height}x{width}x{channels} exceed the job input limit of {limit_bytes} bytes"
        )
    rows = []
    for path in files:
        with Image.open(path) as img:
            arr = np.asarray(img.convert(mode).resize((width, height), Image.Resampling.BILINEAR))
        rows.append(arr.reshape(height, width, channels))
    return {spec.name: np.stack(rows)}, [p.name for p in files]


class JobRunner:
    def __init__(
        self,
        plane: InferencePort,
        decisions: DecisionLog,
        store: MetadataStore,
        data_dir: Path,
        batch_rows: int,
        *,
        busy: Callable[[], str | None] = lambda: None,
        max_failures: int = 5,
        job_roots: list[Path] | None = None,
        max_input_bytes: int | None = None,
        retry_s: float = 1.0,
    ) -> None:
        self.plane = plane
        self.decisions = decisions
        self.store = store
        self.root = Path(data_dir) / "jobs"
        self.batch_rows = batch_rows
        self.busy = busy  # why online work needs the capacity now (jobs pause), or None
        self.max_failures = max_failures
        self.job_roots = [Path(r) for r in job_roots or []]
        self.max_input_bytes = max_input_bytes
        self.retry_s = retry_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._inputs: tuple[str, dict[str, np.ndarray]] | None = None  # the current job's, cached
        self._paused_at: dict[str, float] = {}

    # ---- records ---------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        body = self.store.get("job", job_id)
        if body is None:
            raise NotFound(f"unknown job '{job_id}'")
        return Job.model_validate(body)

    def list(self) -> list[Job]:
        return sorted((Job.model_validate(b) for b in self.store.list("job")), key=lambda j: j.created)

    def _put(self, job: Job) -> None:
        job.updated = time.time()
        self.store.put("job", job.id, job.model, job.model_dump(mode="json"))

    def _save(self, job: Job) -> bool:
        """Write the runner's copy of a job unless the stored one was cancelled meanwhile (a cancel
        wins over any stale record); False when it was. Read and write happen without an await
        between them, so no other coroutine of this server can slip in."""
        stored = self.store.get("job", job.id)
        if stored is None or stored.get("status") == "cancelled":
            return False
        self._put(job)
        return True

    def result_path(self, job_id: str) -> Path:
        job = self.get(job_id)
        if job.status != "done":
            raise InvalidInput(f"job {job_id} is {job.status} ({job.done_rows}/{job.rows} rows): no result yet")
        return self.root / job_id / "outputs.npz"

    # ---- submission ------------------------------------------------------------------------
    async def submit(
        self,
        model: str,
        inputs: dict[str, np.ndarray] | None = None,
        directory: str | None = None,
        min_accuracy: float | None = None,
    ) -> Job:
        """Check, store (inputs written and fsynced, the record put) and queue a job. The catalog is
        read here, on the event loop that updates it; the image decoding, the input checks and the
        writes run in a thread: a directory of images or a large .npz must not stall the loop that
        serves requests."""
        scope, sig, variants, _ = self.plane.catalog.resolve(model, None)
        if (inputs is None) == (directory is None):
            raise InvalidInput("a job takes either an .npz of inputs or a directory of images")
        ready = [v for v in variants if v.status == "ready"]
        if min_accuracy is not None:
            if not 0 <= min_accuracy <= 1:
                raise InvalidInput(f"min_accuracy out of range: {min_accuracy:g}")
            best = max((v.accuracy or 0.0 for v in ready), default=0.0)
            if best < min_accuracy:
                raise InvalidInput(f"min_accuracy {min_accuracy:g} unreachable for {scope}: best is {best:g}")
        batch = min([self.batch_rows, *(v.max_batch for v in ready)])
        job = await asyncio.to_thread(self._accept, model, sig, inputs, directory, min_accuracy, batch)
        self.decisions.log_decision(
            "job",
            f"job {job.id} submitted: {job.rows} rows of {scope}"
            + (f" at accuracy >= {min_accuracy:g}" if min_accuracy is not None else ""),
            job=job.id,
        )
        self._wake.set()
        return job

    def _accept(
        self,
        model: str,
        sig: Any,
        inputs: dict[str, np.ndarray] | None,
        directory: str | None,
        min_accuracy: float | None,
        batch: int,
    ) -> Job:
        files: list[str] = []
        if directory is not None:
            inputs, files = load_images(allowed_directory(directory, self.job_roots), sig, self.max_input_bytes)
        assert inputs is not None
        req = InferRequest(
            model, None, [InferInput(k, NUMPY_TO_V2.get(v.dtype, "?"), tuple(v.shape), v) for k, v in inputs.items()]
        )
        rows = check_inputs(req, sig)
        job = Job(
            id=uuid.uuid4().hex[:12], model=model, min_accuracy=min_accuracy, rows=rows, batch_rows=batch, files=files
        )
        folder = self.root / job.id
        folder.mkdir(parents=True, exist_ok=True)
        _save_npz(folder / "inputs.npz", inputs)
        self._put(job)
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.status in ACTIVE:
            job.status, job.reason, job.finished = "cancelled", "cancelled by the user", time.time()
            self._put(job)
            self.decisions.log_decision("job", f"job {job.id} cancelled at {job.done_rows}/{job.rows} rows", job=job.id)
        return job

    # ---- running ---------------------------------------------------------------------------
    def start(self) -> None:
        for job in self.list():  # after a restart: running ones resume from their last batch
            if job.status in ("running", "paused"):
                job.status, job.reason = "queued", f"resumed after a restart at {job.done_rows}/{job.rows} rows"
                self._put(job)
                self.decisions.log_decision("job", f"job {job.id} {job.reason}", job=job.id)
        self._task = asyncio.create_task(self._run(), name="infaas-jobs")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            job = None
            try:
                job = next((j for j in self.list() if j.status in ACTIVE), None)
                if job is None:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 1.0)
                    continue
                while await self._step(job):  # the same job until it ends: no re-listing per batch
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug or an unreadable record: counted against the job, never forever
                if unreachable(exc):  # an outage of the store, not the job's fault: wait it out
                    log.warning("job runner: the metadata store is unreachable (%s)", type(exc).__name__)
                    await asyncio.sleep(self.retry_s)
                    continue
                log.exception("job runner")
                self.decisions.log_decision("error", f"job runner: {type(exc).__name__}: {exc}")
                if job is not None:
                    job.failures += 1
                    if job.failures >= self.max_failures:
                        with contextlib.suppress(Exception):
                            self._finish(job, "failed", f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self.retry_s)

    async def _step(self, job: Job) -> bool:
        """One batch of ``job`` (or one pause tick); False once the job has ended or was cancelled."""
        if self.get(job.id).status not in ACTIVE:  # cancelled meanwhile
            return False
        if job.done_rows >= job.rows:  # a crash between the last part and the merge
            return await self._complete(job)
        busy = self.busy()
        if busy is not None:
            if job.status != "paused":
                job.status, job.reason, job.pauses = "paused", f"paused: {busy}", job.pauses + 1
                self._paused_at[job.id] = time.monotonic()
                if not self._save(job):
                    return False
                self.decisions.log_decision("job", f"job {job.id} paused: {busy}", job=job.id)
            await asyncio.sleep(0.25)
            return True
        if job.status != "running":
            if job.id in self._paused_at:
                job.paused_s += time.monotonic() - self._paused_at.pop(job.id)
                self.decisions.log_decision(
                    "job", f"job {job.id} resumed: online load is back within capacity", job=job.id
                )
            job.status, job.reason = "running", ""
            if not self._save(job):
                return False
        try:
            if self._inputs is None or self._inputs[0] != job.id:
                with np.load(self.root / job.id / "inputs.npz") as npz:
                    self._inputs = (job.id, {k: npz[k] for k in npz.files})
        except Exception as exc:  # a missing or corrupt input file will not get better
            self._finish(job, "failed", f"cannot read the job's inputs: {type(exc).__name__}: {exc}")
            return False
        inputs = self._inputs[1]
        start, end = job.done_rows, min(job.rows, job.done_rows + job.batch_rows)
        params: dict[str, Any] = {} if job.min_accuracy is None else {"min_accuracy": job.min_accuracy}
        req = InferRequest(
            job.model,
            None,
            [
                InferInput(k, NUMPY_TO_V2[np.dtype(v.dtype)], (end - start, *v.shape[1:]), v[start:end])
                for k, v in inputs.items()
            ],
            parameters=params,
        )
        try:
            resp = await self.plane.infer(req, offline=True)
        except InfaasError as exc:  # unavailable, crashed worker, model removed ...: retry, up to a point
            job.failures += 1
            if isinstance(exc, InvalidInput | NotFound) or job.failures >= self.max_failures:
                self._finish(job, "failed", f"batch at row {start} failed {job.failures} time(s) in a row: {exc}")
                return False
            job.reason = f"retrying batch at row {start} ({job.failures}/{self.max_failures}): {exc}"
            if not self._save(job):
                return False
            await asyncio.sleep(self.retry_s)
            return True
        if self.get(job.id).status not in ACTIVE:  # cancelled while this batch ran: keep its record as is
            return False
        job.failures = 0
        part = self.root / job.id / f"part-{start:010d}.npz"  # written (and fsynced) off the event loop
        await asyncio.to_thread(_save_npz, part, {o.name: o.data for o in resp.outputs})
        variant = resp.parameters.get("variant", "?")
        job.variants[variant] = job.variants.get(variant, 0) + (end - start)
        if job.segments and job.segments[-1][2] == variant and job.segments[-1][1] == start:
            job.segments[-1] = (job.segments[-1][0], end, variant)
        else:
            job.segments.append((start, end, variant))
        job.done_rows = end
        if not self._save(job):
            return False
        if end >= job.rows:
            return await self._complete(job)
        return True

    async def _complete(self, job: Job) -> bool:
        """Merge the parts into outputs.npz (atomically), remove the parts, then mark the job done (a
        crash between the two finds outputs.npz and no parts, and marks it done then). The file work
        runs off the event loop: merging 1,875 parts (30,000 rows) there took ~10 s on 2 cores, during
        which the server answered nothing (the door's lag measure found it)."""
        folder = self.root / job.id
        parts, outputs = await asyncio.to_thread(_merge_parts, folder)
        got = min((len(v) for v in outputs.values()), default=0)
        if got != job.rows:
            self._finish(job, "failed", f"the saved parts hold {got} rows, the job has {job.rows}")
            return False
        if not (folder / "outputs.npz").exists():
            await asyncio.to_thread(_save_npz, folder / "outputs.npz", outputs)
        await asyncio.to_thread(_unlink_all, parts)
        self._finish(job, "done", "")
        return False

    def _finish(self, job: Job, status: str, reason: str) -> None:
        job.status, job.reason, job.finished = status, reason, time.time()
        if status == "failed":
            job.error = reason
        if not self._save(job):
            return
        self._inputs = None
        took = job.finished - job.created
        used = ", ".join(f"{v} ({n} rows)" for v, n in job.variants.items())
        self.decisions.log_decision(
            "job",
            f"job {job.id} {status} after {took:.1f} s: {job.done_rows}/{job.rows} rows"
            + (f" on {used}" if used else "")
            + (f"; {reason}" if reason else "")
            + (f"; paused {job.pauses} time(s), {job.paused_s:.1f} s" if job.pauses else ""),
            job=job.id,
        )


def _merge_parts(folder: Path) -> tuple[list[Path], dict[str, np.ndarray]]:
    """The parts and their rows merged. An outputs.npz is written (atomically) only once every part is
    merged: when one exists, a crash came after the merge, and its rows are the job's."""
    parts = sorted(folder.glob("part-*.npz"))
    if (folder / "outputs.npz").exists():
        with np.load(folder / "outputs.npz") as npz:
            return parts, {k: npz[k] for k in npz.files}
    merged: dict[str, list[np.ndarray]] = {}
    for part in parts:
        with np.load(part) as npz:
            for k in npz.files:
                merged.setdefault(k, []).append(npz[k])
    return parts, {k: np.concatenate(v) for k, v in merged.items()}


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an .npz durably: a temporary file, fsynced, renamed over ``path``, directory fsynced."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
