"""Server-side batching compatible with TF Serving's `--enable_batching` / `BatchingParameters`
(`batching/batching_session.cc`, TF's `shared_batch_scheduler.h`).

Concurrent Predict requests for the same version, signature and outputs wait in one queue; a shared pool
of `num_batch_threads` threads takes up to `max_batch_size` rows (or whatever arrived within
`batch_timeout_micros` of the oldest request), concatenates them along dimension 0, pads to
`allowed_batch_sizes`, runs the model once and hands every request its slice. A full queue answers
UNAVAILABLE, as TF Serving does. Batch sizes, padding and queueing delay are exported as histograms.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from tfsb.errors import FailedPreconditionError, InvalidArgumentError, ServingError, UnavailableError
from tfsb.server.metrics import Metrics


_thread = threading.local()


def queued_here() -> bool:
    """Whether the calling thread's requests went through a batch queue since it last asked (and clears
    the mark). Such a request waits for others to arrive, or for another thread's batch: a transport must
    not run it on a thread those others need (the REST event loop)."""
    queued = getattr(_thread, "queued", False)
    _thread.queued = False
    return queued


@dataclass(frozen=True)
class BatchOptions:
    """BatchingParameters with TF Serving's defaults for unset fields."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 2
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    thread_pool_name: str = "model_server_batch_threads"

    @classmethod
    def from_proto(cls, p, default_threads: int) -> "BatchOptions":
        def v(name, default):
            return getattr(p, name).value if p.HasField(name) else default

        opts = cls(max_batch_size=v("max_batch_size", 1000), batch_timeout_micros=v("batch_timeout_micros", 0),
                   max_enqueued_batches=v("max_enqueued_batches", 10),
                   num_batch_threads=v("num_batch_threads", default_threads),
                   allowed_batch_sizes=tuple(p.allowed_batch_sizes),
                   pad_variable_length_inputs=p.pad_variable_length_inputs,
                   thread_pool_name=v("thread_pool_name", "batch_threads"))
        opts.validate()
        return opts

    def validate(self) -> None:
        sizes = self.allowed_batch_sizes
        if sizes:
            if list(sizes) != sorted(set(sizes)):
                raise InvalidArgumentError("allowed_batch_sizes entries must be monotonically increasing")
            if sizes[-1] != self.max_batch_size:
                raise InvalidArgumentError(f"Last entry in allowed_batch_sizes must match max_batch_size; last entry "
                                           f"was {sizes[-1]}; expected {self.max_batch_size}")


@dataclass(eq=False)
class _Task:
    inputs: dict[str, np.ndarray]
    rows: int
    enqueued: float
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, np.ndarray] | None = None
    error: ServingError | None = None
    taken: bool = False


class _Queue:
    def __init__(self, servable, sig, outputs: tuple[str, ...]):
        self.servable, self.sig, self.outputs = servable, sig, outputs
        self.tasks: deque[_Task] = deque()
        self.rows = 0
        self.last_used = time.monotonic()


class BatchScheduler:
    """Leader/follower scheduling: the requests' own threads run the batches (at most `num_batch_threads`
    at once), so no batch costs a thread hand-off; a request whose rows another thread took just waits."""

    def __init__(self, opts: BatchOptions, metrics: Metrics):
        self.opts = opts
        self.metrics = metrics
        self._cond = threading.Condition()
        self._queues: dict[tuple, _Queue] = {}
        self._order: deque[tuple] = deque()
        self._running = 0
        self._limit = max(1, opts.num_batch_threads)

    # ------------------------------------------------------------------------------------ submit
    def run(self, servable, sig, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """`BatchedServable.run_signature`: queue the request's rows, run them in a batch of `servable`."""
        _thread.queued = True
        if not inputs:
            raise InvalidArgumentError("Batching Run() must have at least one input tensor")
        rows = None
        for arr in inputs.values():
            if arr.ndim == 0:
                raise InvalidArgumentError("Batching Run() input tensors must have at least one dimension")
            if rows is not None and arr.shape[0] != rows:
                raise InvalidArgumentError("Batching Run() input tensors must have equal 0th-dimension size")
            rows = arr.shape[0]
        if rows > self.opts.max_batch_size:
            raise InvalidArgumentError(f"Task size {rows} is larger than maximum input batch size "
                                       f"{self.opts.max_batch_size}")
        servable.check_dtypes(sig, inputs)  # the unbatched path's dtype check, per request
        key = (id(servable), sig.name, tuple(outputs))
        task = _Task(inputs, rows, time.monotonic())
        with self._cond:
            q = self._queues.get(key)
            if q is None:
                q = self._queues[key] = _Queue(servable, sig, tuple(outputs))
                self._order.append(key)
            if q.rows + rows > self.opts.max_enqueued_batches * self.opts.max_batch_size:
                raise UnavailableError("The batch scheduling queue to which this task was submitted is full")
            q.tasks.append(task)
            q.rows += rows
            self._cond.notify_all()
        while True:
            with self._cond:
                got = None
                while not task.taken:
                    if self._running < self._limit:
                        got = self._take()
                        if got is not None:
                            self._running += 1
                            break
                    # with every batch slot busy, a finishing leader's notify is the next event to wait for
                    wait = self._next_deadline() if self._running < self._limit else None
                    self._cond.wait(None if wait is None else max(wait, 0.0001))
                if got is None:
                    break  # another thread took this request's rows
            try:
                self._execute(*got)
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.result

    # ------------------------------------------------------------------------------------ batches
    def _take(self) -> tuple[_Queue, list[_Task]] | None:
        """Under the lock: a batch that is full or whose oldest task waited long enough, else None."""
        now = time.monotonic()
        timeout = self.opts.batch_timeout_micros / 1e6
        for _ in range(len(self._order)):
            key = self._order[0]
            self._order.rotate(-1)
            q = self._queues[key]
            if not q.tasks:
                if now - q.last_used > 60:  # forget queues of unloaded versions
                    del self._queues[key]
                    self._order.remove(key)
                continue
            if q.rows >= self.opts.max_batch_size or now - q.tasks[0].enqueued >= timeout:
                batch, rows = [], 0
                while q.tasks and rows + q.tasks[0].rows <= self.opts.max_batch_size:
                    t = q.tasks.popleft()
                    t.taken = True
                    rows += t.rows
                    batch.append(t)
                q.rows -= rows
                q.last_used = now
                return q, batch
        return None

    def _next_deadline(self) -> float | None:
        timeout = self.opts.batch_timeout_micros / 1e6
        starts = [q.tasks[0].enqueued for q in self._queues.values() if q.tasks]
        return min(starts) + timeout - time.monotonic() if starts else None

    def _execute(self, q: _Queue, batch: list[_Task]) -> None:
        now = time.monotonic()
        for t in batch:
            self.metrics.batch_queuing(self.opts.thread_pool_name, now - t.enqueued)
        try:
            total = sum(t.rows for t in batch)
            padded = next((s for s in self.opts.allowed_batch_sizes if s >= total), total)
            merged = self._merge(batch, padded - total)
            out = q.servable.run_signature(q.sig, merged, q.outputs)
            self.metrics.batch_sizes(total, padded)
            offset = 0
            for name, arr in out.items():
                if arr.ndim == 0:
                    raise FailedPreconditionError("Batched output tensor has 0 dimensions")
                if arr.shape[0] != padded:
                    raise FailedPreconditionError("Batched output tensor's 0th dimension does not equal the sum of "
                                                  "the 0th dimension sizes of the input tensors")
            for t in batch:
                t.result = {name: arr[offset:offset + t.rows] for name, arr in out.items()}
                offset += t.rows
        except ServingError as e:
            for t in batch:
                t.error = e
        except Exception as e:  # noqa: BLE001 - never leave a waiting request hanging
            for t in batch:
                t.error = FailedPreconditionError(f"{type(e).__name__}: {e}")
        for t in batch:
            t.done.set()

    def _merge(self, batch: list[_Task], pad_rows: int) -> dict[str, np.ndarray]:
        merged = {}
        for name in batch[0].inputs:
            parts = [t.inputs[name] for t in batch]
            shapes = {p.shape[1:] for p in parts}
            if len(shapes) > 1:
                if not self.opts.pad_variable_length_inputs:
                    raise FailedPreconditionError(
                        f"Tensors with name '{name}' from different tasks have different shapes and padding is "
                        "turned off. Set pad_variable_length_inputs to true, or ensure that all tensors with the "
                        "same name have equal dimensions starting with the first dim.")
                target = tuple(max(s[i] for s in shapes) for i in range(len(parts[0].shape) - 1))
                parts = [_pad(p, target) for p in parts]
            if pad_rows:
                parts.append(np.repeat(parts[-1][:1], pad_rows, axis=0))  # TF repeats the last task's first row
            merged[name] = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
        return merged


def _pad(arr: np.ndarray, target: tuple[int, ...]) -> np.ndarray:
    """pad_variable_length_inputs: dims >= 1 padded to the batch maximum with the tensor's first element."""
    widths = [(0, 0)] + [(0, t - s) for s, t in zip(arr.shape[1:], target)]
    fill = arr.flat[0] if arr.size else 0
    if arr.dtype == object:
        out = np.full((arr.shape[0], *target), fill, dtype=object)
        out[tuple(slice(0, s) for s in arr.shape)] = arr
        return out
    return np.pad(arr, widths, constant_values=fill)


class BatchedServable:
    """A loaded version whose signature runs go through a BatchScheduler: the runtime knows nothing of
    batching, the core calls `run_signature` either way. Everything else (signatures, metadata, the
    by-name `run` that classify/regress use) is the wrapped servable's. The scheduler has no thread of its
    own, so nothing of it outlives the version (per-model batching) or needs stopping (the shared one)."""

    def __init__(self, inner, scheduler: BatchScheduler):
        self.inner = inner
        self.scheduler = scheduler

    def run_signature(self, sig, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        return self.scheduler.run(self.inner, sig, inputs, outputs)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)
