"""`pipeline.workers.WorkerPool`: ordered results, and a pool that outlives hung, crashed and
failing jobs, shared by several submitting threads."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import pool_jobs
import pytest

from gptforge.pipeline.workers import WorkerPool


def failure(job, reason: str) -> tuple[str, object, str]:
    """Stands in for a lost result, as `pipeline.jobs.failed` does in the real pipeline."""
    return ("failed", job, reason)


def test_results_come_back_in_job_order_whatever_order_they_finish_in():
    # The first jobs take longest, so later ones finish first.
    jobs = [(i, 0.3 - 0.05 * i) for i in range(6)]
    with WorkerPool(pool_jobs.echo, 3, 30, failure) as pool:
        assert pool.map(jobs) == list(range(6))


def test_jobs_run_in_parallel_in_separate_processes():
    with WorkerPool(pool_jobs.pid_after, 2, 30, failure) as pool:
        pids = pool.map([0.5, 0.5])
    assert len(set(pids)) == 2


def test_a_job_past_its_deadline_is_killed_reported_and_the_pool_goes_on():
    with WorkerPool(pool_jobs.misbehave, 1, 1.0, failure) as pool:
        started = time.monotonic()
        results = pool.map(["before", "hang", "after"])
        elapsed = time.monotonic() - started
    assert results[0] == "done:before"
    status, job, reason = results[1]
    assert (status, job) == ("failed", "hang")
    assert "timed out" in reason
    assert results[2] == "done:after"
    assert elapsed < 30, "the hung job must be killed at its deadline, not waited for"


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_a_job_that_kills_its_process_is_reported_as_died_and_the_pool_goes_on(how):
    with WorkerPool(pool_jobs.misbehave, 2, 30, failure) as pool:
        first = pool.map(["a", how, "b", "c"])
        second = pool.map(["d", "e", "f"])
    assert first[0] == "done:a"
    status, job, reason = first[1]
    assert (status, job) == ("failed", how)
    assert "died" in reason
    assert first[2:] == ["done:b", "done:c"]
    assert second == ["done:d", "done:e", "done:f"]


def test_the_exit_code_of_a_dead_process_is_in_the_reason():
    with WorkerPool(pool_jobs.misbehave, 1, 30, failure) as pool:
        exited, killed = pool.map(["exit", "sigkill"])
    assert "exit code 3" in exited[2]
    assert "exit code -9" in killed[2]


def test_an_exception_in_a_job_is_reported_with_its_type_and_message():
    with WorkerPool(pool_jobs.misbehave, 1, 30, failure) as pool:
        results = pool.map(["raise", "after"])
    status, job, reason = results[0]
    assert (status, job) == ("failed", "raise")
    assert "ValueError" in reason
    assert "could not cope" in reason
    assert results[1] == "done:after", "the worker survives an exception in its job"


def test_two_threads_calling_map_at_once_both_get_their_own_results():
    outcomes: dict[str, list] = {}

    def submit(tag: str) -> None:
        outcomes[tag] = pool.map([(f"{tag}{i}", 0.02 * (i % 3)) for i in range(8)])

    with WorkerPool(pool_jobs.echo, 2, 30, failure) as pool:
        threads = [threading.Thread(target=submit, args=(tag,)) for tag in ("x", "y")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
    assert outcomes == {tag: [f"{tag}{i}" for i in range(8)] for tag in ("x", "y")}


def test_an_empty_batch_returns_at_once():
    with WorkerPool(pool_jobs.echo, 1, 30, failure) as pool:
        assert pool.map([]) == []
        assert pool.map([1]) == [1]


def test_a_job_that_returns_none_gets_none_as_its_result():
    before = set(multiprocessing.active_children())
    pool = WorkerPool(pool_jobs.misbehave, 1, 30, failure)
    workers = set(multiprocessing.active_children()) - before
    results: list = []
    jobs = ["none", "a", "none"]
    thread = threading.Thread(target=lambda: results.append(pool.map(jobs)), daemon=True)
    thread.start()
    thread.join(timeout=5)
    try:
        assert results == [[None, "done:a", None]]
        assert all(p.is_alive() for p in workers), "None is a result, not a dead worker"
    finally:
        for process in workers:  # unblocks the dispatcher if it is stuck joining a live worker
            process.kill()
        thread.join(timeout=10)
        pool.close()


def test_a_long_job_is_not_queued_behind_a_busy_worker_but_waits_for_an_idle_one():
    # Worker A takes the first 1 s job, worker B the short one; the second 1 s job must not
    # wait in A's pipe (B would idle for a second) but go to B once B is free.
    with WorkerPool(pool_jobs.pid_after, 2, 30, failure, may_queue=lambda s: s < 0.5) as pool:
        first_long, short, second_long = pool.map([1.0, 0.05, 1.0])
    assert first_long != short
    assert second_long == short


def test_short_jobs_are_queued_two_deep_and_all_come_back_in_order():
    with WorkerPool(pool_jobs.echo, 2, 30, failure) as pool:
        assert pool.map([(i, 0.01) for i in range(40)]) == list(range(40))


def test_closing_the_pool_fails_the_jobs_a_caller_still_waits_for():
    """Ctrl-C closes the pool while task threads wait in `map`: they must return, not hang."""
    from gptforge.pipeline.workers import PoolClosed

    outcome: list[BaseException] = []
    pool = WorkerPool(pool_jobs.echo, 1, 30, failure)

    def wait_for_slow_jobs() -> None:
        try:
            pool.map([("slow", 30.0), ("queued", 30.0), ("pending", 30.0)])
        except PoolClosed as exc:
            outcome.append(exc)

    caller = threading.Thread(target=wait_for_slow_jobs)
    caller.start()
    time.sleep(0.5)
    pool.close()
    caller.join(timeout=10)
    assert not caller.is_alive() and len(outcome) == 1


def test_a_worker_that_died_while_idle_is_replaced_when_work_comes():
    """Sending to a dead worker's pipe raised BrokenPipeError in the dispatcher thread, and
    every caller then waited forever (also seen with a job that kills its worker while a
    second one is being queued behind it)."""
    with WorkerPool(pool_jobs.pid_after, 1, 30, failure) as pool:
        [pid] = pool.map([0])
        os.kill(pid, signal.SIGKILL)
        while os.path.exists(f"/proc/{pid}"):  # reaped by the forkserver
            time.sleep(0.01)
        results: list = []
        thread = threading.Thread(target=lambda: results.append(pool.map([0, 0])), daemon=True)
        thread.start()
        thread.join(timeout=30)
        assert results and pid not in results[0]
