"""Request batching's queue and its limits, with --enable_batching.

TF Serving wraps each loaded version's session in a BatchingSession
(tensorflow_serving/batching/batching_session.cc, from bundle_factory_util.cc
WrapSessionForBatching) whose Run() turns a call into a task of one queue per signature
(input and output tensor names) of TensorFlow's SharedBatchScheduler
(tensorflow/core/kernels/batching_util/shared_batch_scheduler.h). One scheduler serves the
whole server (saved_model_bundle_factory.cc creates it once), with num_batch_threads threads
(default port::MaxParallelism(), the CPUs). Copied here, as a client sees it:

- the task size is the inputs' 0th dimension, equal for every input (batching_util.h
  ComputeTensorBatchSize: "Batching Run() input tensors must have at least one dimension",
  "... must have equal 0th-dimension size");
- Queue::ValidateBatchTaskQueueCapacity(): a task larger than input_batch_size_limit
  (max_batch_size, default 1000) is INVALID_ARGUMENT "Task size N is larger than maximum input
  batch size M" (HTTP 400); a task that does not fit the open batch when max_enqueued_batches
  batches (default 10) are already enqueued is UNAVAILABLE "The batch scheduling queue to which
  this task was submitted is full; currently N batches enqueued and max_enqueued_batches is M"
  (HTTP 503; with enable_large_batch_splitting, the capacity message);
- the queue is a deque of batches, the last one open; a batch leaves the queue when a batch
  thread takes it (ScheduleBatch: a closed batch, or the open one once it is full or its oldest
  task waited batch_timeout_micros); threads go round-robin over the queues and a thread is busy
  until every task of its batch finished; so the queue's bound counts only batches not yet
  taken by a thread, as the real one does;
- BatchingSession::ProcessBatch(): tasks whose RunOptions timeout passed while queued fail with
  RESOURCE_EXHAUSTED "Run() timeout exceeded while waiting in batching queue" when all tasks of
  the batch did; the batch runs with the latest task deadline as its timeout.

Not copied: the tasks of one batch are not concatenated into one Session::Run (each request
still runs its own call, on the batch's slot), so allowed_batch_sizes padding and
pad_variable_length_inputs change nothing here; a task larger than the open batch's room is not
split across batches with enable_large_batch_splitting (it occupies one batch); the low
priority queue.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from testing.tfserving_standin.status import Code, error

INPUT_BATCH_SIZE_LIMIT_DEFAULT = 1000  # QueueOptions::input_batch_size_limit
MAX_ENQUEUED_BATCHES_DEFAULT = 10  # QueueOptions::max_enqueued_batches
MAX_EXECUTION_BATCH_SIZE_DEFAULT = 1000  # QueueOptions::max_execution_batch_size


def _now_us() -> float:
    return time.monotonic_ns() / 1000


@dataclass(frozen=True)
class QueueOptions:
    input_batch_size_limit: int = INPUT_BATCH_SIZE_LIMIT_DEFAULT
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = MAX_ENQUEUED_BATCHES_DEFAULT
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = MAX_EXECUTION_BATCH_SIZE_DEFAULT

    @classmethod
    def from_parameters(cls, params: Any) -> QueueOptions:
        """bundle_factory_util.h GetQueueOptions(), then SharedBatchScheduler::AddQueue()'s
        rewrite (max_enqueued_batches 0 -> 1 without splitting) and checks."""
        limit = (
            params.max_batch_size.value
            if params.HasField("max_batch_size")
            else INPUT_BATCH_SIZE_LIMIT_DEFAULT
        )
        timeout = (
            params.batch_timeout_micros.value if params.HasField("batch_timeout_micros") else 0
        )
        enqueued = (
            params.max_enqueued_batches.value
            if params.HasField("max_enqueued_batches")
            else MAX_ENQUEUED_BATCHES_DEFAULT
        )
        splitting = bool(
            params.HasField("enable_large_batch_splitting")
            and params.enable_large_batch_splitting.value
        )
        execution = MAX_EXECUTION_BATCH_SIZE_DEFAULT
        if splitting:
            execution = (
                params.max_execution_batch_size.value
                if params.HasField("max_execution_batch_size")
                else params.max_batch_size.value
            )
        if not splitting and enqueued == 0:
            enqueued = 1
        if limit == 0:
            raise error(
                Code.INVALID_ARGUMENT, "input_batch_size_limit must be positive; was ", limit
            )
        if timeout < 0:
            raise error(
                Code.INVALID_ARGUMENT, "batch_timeout_micros must be non-negative; was ", timeout
            )
        if enqueued == 0:
            raise error(
                Code.INVALID_ARGUMENT, "max_enqueued_batches must be positive; was ", enqueued
            )
        if splitting and limit < execution:
            raise error(
                Code.INVALID_ARGUMENT,
                "When enable_large_batch_splitting is true, input_batch_size_limit must be "
                "greater than or equal to max_execution_batch_size.",
                int(splitting),
                limit,
                execution,
            )
        return cls(limit, timeout, enqueued, splitting, execution)

    @property
    def batch_size_limit(self) -> int:
        """shared_batch_scheduler.h GetMaxExecutionBatchSize()."""
        if self.enable_large_batch_splitting:
            return self.max_execution_batch_size
        return self.input_batch_size_limit


@dataclass(eq=False)
class _Batch:
    tasks: list[Task] = field(default_factory=list)
    size: int = 0
    closed: bool = False
    running: bool = False
    finished: int = 0
    run_timeout_ms: int | None = None  # set when a thread takes it
    expired: bool = False


@dataclass(eq=False)
class Task:
    """One Session::Run call waiting in (then running from) a batch."""

    queue: Queue
    size: int
    timeout_ms: int | None
    enqueued_us: float = field(default_factory=_now_us)
    batch: _Batch | None = None

    def wait(self) -> int | None:
        """Block until a batch thread took this task's batch; the run timeout in ms (None:
        none). Raises RESOURCE_EXHAUSTED when the whole batch timed out in the queue."""
        return self.queue.scheduler.wait_for(self)

    def done(self) -> None:
        self.queue.scheduler.finished(self)


class Queue:
    """One SharedBatchScheduler queue (internal::Queue)."""

    def __init__(self, scheduler: BatchScheduler, options: QueueOptions) -> None:
        self.scheduler = scheduler
        self.options = options
        self.batches: deque[_Batch] = deque([_Batch()])
        self.open_batch_start_us = 0.0
        self.closed = False

    def schedule(self, size: int, timeout_ms: int | None) -> Task:
        """Queue::Schedule(); raises StatusError."""
        with self.scheduler.cv:
            self._validate(size)
            o = self.options
            if self.batches[-1].size + size > o.batch_size_limit and self.batches[-1].tasks:
                self._start_new_batch()
            task = Task(self, size, timeout_ms)
            if not self.batches[-1].tasks:
                self.open_batch_start_us = task.enqueued_us
            self.batches[-1].tasks.append(task)
            self.batches[-1].size += size
            task.batch = self.batches[-1]
            self.scheduler.cv.notify_all()
            return task

    def _validate(self, size: int) -> None:
        """Queue::ValidateBatchTaskQueueCapacity()."""
        o = self.options
        if size > o.input_batch_size_limit:
            raise error(
                Code.INVALID_ARGUMENT,
                f"Task size {size} is larger than maximum input batch size "
                f"{o.input_batch_size_limit}",
            )
        if o.enable_large_batch_splitting:
            capacity = self._capacity()
            if size > capacity:
                raise error(
                    Code.UNAVAILABLE,
                    "The batch scheduling queue to which this task was submitted is full; "
                    f"task size is {size} but scheduling capacity is only {capacity} "
                    f"(num_enqueued_batches={len(self.batches)}, "
                    f"max_enqueued_batches={o.max_enqueued_batches}, "
                    f"open_batch_size={self.batches[-1].size}, "
                    f"max_execution_batch_size={o.batch_size_limit})",
                )
            return
        open_size = self.batches[-1].size
        if open_size + size > o.input_batch_size_limit and len(self.batches) >= (
            o.max_enqueued_batches
        ):
            raise error(
                Code.UNAVAILABLE,
                "The batch scheduling queue to which this task was submitted is full; "
                f"currently {len(self.batches)} batches enqueued and max_enqueued_batches "
                f"is {o.max_enqueued_batches}",
            )

    def _capacity(self) -> int:
        """Queue::SchedulingCapacityInternal()."""
        limit = self.options.batch_size_limit
        return (self.options.max_enqueued_batches - len(self.batches)) * limit + (
            limit - self.batches[-1].size
        )

    def _start_new_batch(self) -> None:
        self.batches[-1].closed = True
        self.batches.append(_Batch())

    def take_batch(self, now_us: float) -> _Batch | None:
        """Queue::ScheduleBatch(): the front batch once it is closed, or the open one once it
        is schedulable (full, or its first task waited batch_timeout_micros)."""
        open_batch = self.batches[-1]
        if len(self.batches) == 1 and open_batch.tasks:
            full = open_batch.size >= self.options.batch_size_limit
            waited = now_us >= self.open_batch_start_us + self.options.batch_timeout_micros
            if self.closed or full or waited:
                self._start_new_batch()
        if len(self.batches) >= 2:
            return self.batches.popleft()
        return None

    def empty(self) -> bool:
        return len(self.batches) == 1 and not self.batches[0].tasks

    def next_timeout_us(self) -> float | None:
        """When the open batch becomes schedulable by its timeout."""
        if len(self.batches) == 1 and self.batches[-1].tasks:
            return self.open_batch_start_us + self.options.batch_timeout_micros
        return None


class BatchScheduler:
    """SharedBatchScheduler: batch threads shared by every queue of the server.

    The callers' own threads play the batch threads' bookkeeping: a task waits until its batch
    is taken (a free thread, round-robin over the queues), runs, and frees the thread when the
    last task of its batch finished.
    """

    def __init__(self, num_batch_threads: int) -> None:
        self.cv = threading.Condition()
        self.num_batch_threads = max(1, num_batch_threads)
        self._free = self.num_batch_threads
        self._queues: list[Queue] = []
        self._next = 0

    def add_queue(self, options: QueueOptions) -> Queue:
        queue = Queue(self, options)
        with self.cv:
            self._queues.append(queue)
        return queue

    def remove_queue(self, queue: Queue) -> None:
        """QueueHandle's destructor: the queue closes; its tasks still drain."""
        with self.cv:
            queue.closed = True
            self.cv.notify_all()

    def _dispatch(self, now_us: float) -> None:
        """SharedBatchScheduler::GetNextWorkItem_Locked() for every free thread."""
        while self._free > 0 and self._queues:
            taken = None
            for i in range(len(self._queues)):
                index = (self._next + i) % len(self._queues)
                taken = self._queues[index].take_batch(now_us)
                if taken is not None:
                    self._next = (index + 1) % len(self._queues)
                    break
            if taken is None:
                break
            self._free -= 1
            taken.running = True
            self._set_deadline(taken, now_us)
            self.cv.notify_all()
        self._queues = [q for q in self._queues if not (q.closed and q.empty())]

    @staticmethod
    def _set_deadline(batch: _Batch, dequeue_us: float) -> None:
        """BatchingSession::ProcessBatch(): the latest task deadline is the batch's."""
        deadline = 0.0
        expired = True
        for task in batch.tasks:
            timeout_us = (
                math.inf
                if task.timeout_ms is None or task.timeout_ms <= 0
                else task.timeout_ms * 1000
            )
            task_deadline = task.enqueued_us + timeout_us
            if task_deadline > dequeue_us:
                expired = False
                deadline = max(deadline, task_deadline)
        batch.expired = expired
        batch.run_timeout_ms = (
            None if expired or math.isinf(deadline) else int((deadline - dequeue_us) // 1000)
        )

    def wait_for(self, task: Task) -> int | None:
        with self.cv:
            while True:
                now = _now_us()
                self._dispatch(now)
                batch = task.batch
                assert batch is not None
                if batch.running:
                    break
                waits = [t for q in self._queues if (t := q.next_timeout_us()) is not None]
                timeout = max(0.0, (min(waits) - now) / 1e6) if waits else None
                self.cv.wait(timeout if timeout is None else max(timeout, 0.0005))
        if batch.expired:
            raise error(
                Code.RESOURCE_EXHAUSTED, "Run() timeout exceeded while waiting in batching queue"
            )
        return batch.run_timeout_ms

    def finished(self, task: Task) -> None:
        with self.cv:
            batch = task.batch
            assert batch is not None
            batch.finished += 1
            if batch.finished == len(batch.tasks):
                self._free += 1
                self._dispatch(_now_us())
                self.cv.notify_all()


def task_size(feeds: list[tuple[str, Any]]) -> int:
    """batching_util.h ComputeTensorBatchSize() over the Run() inputs."""
    if not feeds:
        raise error(Code.INVALID_ARGUMENT, "Batching Run() must have at least one input tensor")
    size: int | None = None
    for _, value in feeds:
        shape: tuple[int, ...] = tuple(getattr(value, "shape", ()))
        if len(shape) == 0:
            raise error(
                Code.INVALID_ARGUMENT,
                "Batching Run() input tensors must have at least one dimension",
            )
        if size is None:
            size = int(shape[0])
        elif int(shape[0]) != size:
            raise error(
                Code.INVALID_ARGUMENT,
                "Batching Run() input tensors must have equal 0th-dimension size",
            )
    assert size is not None
    return size
