"""Servable states, the event bus and ServableStateMonitor.

- tensorflow_serving/core/servable_state.h: ManagerState kStart, kLoading, kAvailable,
  kUnloading, kEnd, each event with a health Status (an error only on kEnd after a failure).
- tensorflow_serving/core/servable_state_monitor.cc: the monitor keeps the last state of every
  version ever seen (states_; the model server never forgets them, so an unloaded version stays
  END with OK), versions listed highest first (VersionMap is std::map<..., std::greater>), and
  notification requests evaluated synchronously on every event:
  a specific version reaches a state when it is in the goal state or kEnd; a "latest" request
  (ServableRequest::Latest) when ANY version of the stream is in the goal state or kEnd,
  looking from the highest version down and taking the first such one.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass

from testing.tfserving_standin.status import OK, Status


class ManagerState(enum.IntEnum):
    START = 0
    LOADING = 1
    AVAILABLE = 2
    UNLOADING = 3
    END = 4


@dataclass(frozen=True, order=True)
class ServableId:
    name: str
    version: int

    def debug_string(self) -> str:
        """servable_id.h ServableId::DebugString()."""
        return f"{{name: {self.name} version: {self.version}}}"


@dataclass(frozen=True)
class ServableRequest:
    name: str
    version: int | None  # None: Latest

    def debug_string(self) -> str:
        """manager.h ServableRequest::DebugString()."""
        if self.version is not None:
            return f"Specific({self.name}, {self.version})"
        return f"Latest({self.name})"


@dataclass(frozen=True)
class ServableState:
    id: ServableId
    manager_state: ManagerState
    health: Status = OK


Notifier = Callable[[bool, dict[ServableId, ManagerState]], None]


class EventBus:
    """tensorflow_serving/util/event_bus.h: synchronous publish to every subscriber."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[ServableStateMonitor] = []

    def subscribe(self, monitor: ServableStateMonitor) -> None:
        with self._lock:
            self._subscribers.append(monitor)

    def unsubscribe(self, monitor: ServableStateMonitor) -> None:
        with self._lock:
            if monitor in self._subscribers:
                self._subscribers.remove(monitor)

    def publish(self, state: ServableState) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for monitor in subscribers:
            monitor.handle_event(state)


@dataclass
class _NotificationRequest:
    servables: list[ServableRequest]
    goal: ManagerState
    notifier: Notifier


class ServableStateMonitor:
    def __init__(self, bus: EventBus) -> None:
        self._lock = threading.RLock()
        self._states: dict[str, dict[int, ServableState]] = {}
        self._requests: list[_NotificationRequest] = []
        self._bus = bus
        bus.subscribe(self)

    def close(self) -> None:
        self._bus.unsubscribe(self)

    def handle_event(self, state: ServableState) -> None:
        with self._lock:
            self._states.setdefault(state.id.name, {})[state.id.version] = state
            self._maybe_notify()

    def get_state(self, servable_id: ServableId) -> ServableState | None:
        with self._lock:
            return self._states.get(servable_id.name, {}).get(servable_id.version)

    def get_version_states(self, name: str) -> list[tuple[int, ServableState]]:
        """Highest version first, as ServableStateMonitor::VersionMap iterates."""
        with self._lock:
            versions = self._states.get(name, {})
            return sorted(versions.items(), key=lambda kv: kv[0], reverse=True)

    def _reached(
        self, request: _NotificationRequest
    ) -> tuple[bool, dict[ServableId, ManagerState]] | None:
        """servable_state_monitor.cc ShouldSendStateReachedNotification()."""
        reached_goal = True
        states_reached: dict[ServableId, ManagerState] = {}
        for servable in request.servables:
            if servable.version is not None:
                sid = ServableId(servable.name, servable.version)
                state = self._states.get(sid.name, {}).get(sid.version)
                if state is None or state.manager_state not in (request.goal, ManagerState.END):
                    return None
                reached_goal = reached_goal and state.manager_state == request.goal
                states_reached[sid] = state.manager_state
            else:
                found: ServableState | None = None
                for _, state in sorted(self._states.get(servable.name, {}).items(), reverse=True):
                    if state.manager_state in (request.goal, ManagerState.END):
                        found = state
                        break
                if found is None:
                    return None
                reached_goal = reached_goal and found.manager_state == request.goal
                states_reached[found.id] = found.manager_state
        return reached_goal, states_reached

    def _maybe_notify(self) -> None:
        remaining = []
        for request in self._requests:
            result = self._reached(request)
            if result is None:
                remaining.append(request)
            else:
                request.notifier(*result)
        self._requests = remaining

    def notify_when_servables_reach_state(
        self, servables: list[ServableRequest], goal: ManagerState, notifier: Notifier
    ) -> None:
        with self._lock:
            self._requests.append(_NotificationRequest(servables, goal, notifier))
            self._maybe_notify()

    def wait_until_servables_reach_state(
        self, servables: list[ServableRequest], goal: ManagerState
    ) -> tuple[bool, dict[ServableId, ManagerState]]:
        """WaitUntilServablesReachState(): blocks (forever, as the model server does)."""
        done = threading.Event()
        result: list[tuple[bool, dict[ServableId, ManagerState]]] = []

        def notifier(reached: bool, states: dict[ServableId, ManagerState]) -> None:
            result.append((reached, dict(states)))
            done.set()

        self.notify_when_servables_reach_state(servables, goal, notifier)
        done.wait()
        return result[0]
