"""Progress events fanned out to the watchers of each experiment (WatchExperiment streams).

Not thread-safe on its own: the scheduler publishes under its lock, so a
watcher sees events in commit order. Each watcher drains its own queue.
"""

from __future__ import annotations

import queue
from collections import defaultdict
from collections.abc import Callable

from taylorglo_tf.rpc import experiment_service_pb2 as es_pb2

ProgressEvent = es_pb2.ProgressEvent
# put on a watcher's queue when the coordinator stops: the stream ends
CLOSED = None


class EventHub:
    def __init__(self) -> None:
        self._watchers: dict[str, list[queue.SimpleQueue]] = defaultdict(list)
        # called with every event of every experiment (the fleet's rates, live TensorBoard): each must
        # only hand the event on, as it runs under the scheduler's lock
        self._listeners: list[Callable[[ProgressEvent], None]] = []

    def listen(self, callback: Callable[[ProgressEvent], None]) -> None:
        self._listeners.append(callback)

    def subscribe(self, experiment_id: str) -> queue.SimpleQueue:
        events: queue.SimpleQueue = queue.SimpleQueue()
        self._watchers[experiment_id].append(events)
        return events

    def unsubscribe(self, experiment_id: str, events: queue.SimpleQueue) -> None:
        queues = self._watchers.get(experiment_id, [])
        if events in queues:
            queues.remove(events)

    def publish(self, experiment_id: str, make_event: Callable[[], ProgressEvent]) -> None:
        """Send an event to the experiment's watchers (built only when someone watches)."""
        queues = self._watchers.get(experiment_id)
        if queues or self._listeners:
            event = make_event()
            for q in queues or ():
                q.put(event)
            for callback in self._listeners:
                callback(event)

    def close_experiment(self, experiment_id: str) -> None:
        """Forget a finished experiment's watchers (they got its final event)."""
        self._watchers.pop(experiment_id, None)

    def close_all(self) -> None:
        for queues in self._watchers.values():
            for q in queues:
                q.put(CLOSED)
