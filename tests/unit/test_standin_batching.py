"""The TF Serving stand-in's batch queue (testing/tfserving_standin/batching.py), without a
server: SharedBatchScheduler's queue bound, batch formation and the queued-timeout rule."""

from __future__ import annotations

import threading
import time

import pytest

from testing.tfserving_standin.batching import BatchScheduler, QueueOptions, Task
from testing.tfserving_standin.status import Code, StatusError


def run_in_thread(task: Task, hold: float, out: list[object]) -> threading.Thread:
    def run() -> None:
        try:
            out.append(task.wait())
            time.sleep(hold)
        except StatusError as exc:
            out.append(exc.status.code)
        finally:
            task.done()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_the_bound_counts_batches_not_yet_taken_by_a_thread() -> None:
    scheduler = BatchScheduler(num_batch_threads=1)
    queue = scheduler.add_queue(QueueOptions(input_batch_size_limit=2, max_enqueued_batches=2))
    out: list[object] = []
    first = queue.schedule(2, None)
    t1 = run_in_thread(first, 0.5, out)  # taken at once: the thread is busy 0.5 s
    time.sleep(0.1)
    assert first.batch is not None and first.batch.running
    queue.schedule(2, None)  # batch 1 (open, full)
    queue.schedule(2, None)  # batch 2: does not fit batch 1 and 1 < 2 batches wait
    with pytest.raises(StatusError) as exc:
        queue.schedule(1, None)  # does not fit, 2 batches wait
    assert exc.value.status.code == Code.UNAVAILABLE
    assert exc.value.status.message == (
        "The batch scheduling queue to which this task was submitted is full; currently 2 "
        "batches enqueued and max_enqueued_batches is 2"
    )
    with pytest.raises(StatusError) as exc:
        queue.schedule(3, None)
    assert exc.value.status.code == Code.INVALID_ARGUMENT
    assert exc.value.status.message == "Task size 3 is larger than maximum input batch size 2"
    t1.join(5)


def test_tasks_share_a_batch_within_batch_timeout_micros() -> None:
    scheduler = BatchScheduler(num_batch_threads=1)
    queue = scheduler.add_queue(
        QueueOptions(input_batch_size_limit=4, batch_timeout_micros=300_000)
    )
    out: list[object] = []
    a = queue.schedule(1, None)
    b = queue.schedule(1, None)
    began = time.monotonic()
    threads = [run_in_thread(t, 0.0, out) for t in (a, b)]
    for t in threads:
        t.join(5)
    assert a.batch is b.batch  # one batch, taken when its first task had waited 0.3 s
    assert 0.25 <= time.monotonic() - began < 1.5
    c = queue.schedule(4, None)  # a full batch goes at once
    began = time.monotonic()
    run_in_thread(c, 0.0, out).join(5)
    assert time.monotonic() - began < 0.25


def test_a_batch_whose_tasks_all_timed_out_in_the_queue_fails() -> None:
    """batching_session.cc ProcessBatch(): RESOURCE_EXHAUSTED; otherwise the run gets the
    latest deadline minus the time dequeued."""
    scheduler = BatchScheduler(num_batch_threads=1)
    queue = scheduler.add_queue(QueueOptions(input_batch_size_limit=1))
    out: list[object] = []
    holder = run_in_thread(queue.schedule(1, None), 0.6, out)
    time.sleep(0.1)
    late = queue.schedule(1, 200)  # times out while the thread is busy
    patient = queue.schedule(1, 5000)
    results: list[object] = []
    threads = [run_in_thread(late, 0.0, results), run_in_thread(patient, 0.0, results)]
    for t in (holder, *threads):
        t.join(5)
    assert Code.RESOURCE_EXHAUSTED in results
    timeouts = [r for r in results if isinstance(r, int) and not isinstance(r, Code)]
    assert len(timeouts) == 1 and 3500 < timeouts[0] < 5000


def test_queue_options_from_batching_parameters() -> None:
    from testing.tfserving_standin.protos import BatchingParameters

    params = BatchingParameters()
    assert QueueOptions.from_parameters(params) == QueueOptions(1000, 0, 10, False, 1000)
    params.max_batch_size.value = 32
    params.batch_timeout_micros.value = 2000
    params.max_enqueued_batches.value = 0  # rewritten to 1 without splitting
    options = QueueOptions.from_parameters(params)
    assert (options.input_batch_size_limit, options.max_enqueued_batches) == (32, 1)
    assert options.batch_size_limit == 32
    params.max_batch_size.value = 0
    with pytest.raises(StatusError, match="input_batch_size_limit must be positive; was 0"):
        QueueOptions.from_parameters(params)
