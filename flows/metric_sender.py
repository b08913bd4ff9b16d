"""Metrics to MLflow from a background thread, so a slow or lost tracking server never stalls
the training loop: batches wait in order and are retried until the server answers again."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports TrackingUnavailable; MLflow loads only when metrics flow
    from mlflow import MlflowClient
    from mlflow.entities import Metric

RETRY_EVERY_S = 5.0


class TrackingUnavailable(RuntimeError):
    """The tracking server stopped answering; the message says what was kept and where."""


class MetricSender:
    """`send(step, metrics)` returns at once; `close(timeout)` returns what never arrived."""

    def __init__(self, client: MlflowClient, run_id: str):
        self._client, self._run_id = client, run_id
        self._queue: queue.Queue[list[Metric] | None] = queue.Queue()
        self._waiting: deque[list[Metric]] = deque()
        self._closing = threading.Event()
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._deliver, name="gptforge-metrics", daemon=True)
        self._thread.start()

    def send(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._queue.put([Metric(k, float(v), now, step) for k, v in metrics.items()])

    def close(self, timeout: float) -> int:
        """Wait up to `timeout` s for the backlog; returns the number of batches not delivered."""
        self._queue.put(None)
        self._thread.join(timeout)
        self._closing.set()
        self._thread.join(1.0)  # it may sit in the client's own retries: it is a daemon
        return len(self._waiting) + max(0, self._queue.qsize() - 1)

    def _deliver(self) -> None:
        done = False
        while not (done and not self._waiting) and not self._closing.is_set():
            try:
                item = self._queue.get(timeout=RETRY_EVERY_S if self._waiting else None)
            except queue.Empty:
                item = []
            if item is None:
                done = True
            elif item:
                self._waiting.append(item)
            while self._waiting and not self._closing.is_set():
                try:
                    self._client.log_batch(self._run_id, metrics=self._waiting[0])
                except Exception as exc:  # noqa: BLE001 - kept and retried; reported at close
                    self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                    break
                self._waiting.popleft()
