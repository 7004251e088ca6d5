"""Version lifecycle: LoaderHarness, BasicManager, AspiredVersionsManager and the policy.

Copied from tensorflow_serving/core/:
- loader_harness.cc: harness states (new, load-requested, load-approved, loading, ready,
  unload-requested, quiescing, quiesced, unloading, disabled, error); Load() retried
  max_num_load_retries times, load_retry_interval_micros apart (util/retrier.cc), each failure
  logged as "Loading servable: {name: m version: n} failed: <status>"; a failed load ends in
  state error and publishes kEnd with the error.
- basic_manager.cc: the events published on the bus (kStart when a version starts being
  managed, kLoading, kAvailable after the serving map includes it, kUnloading, kEnd); the
  serving map holds ready versions only; UpdateServingMap() publishes a new map (new requests
  see it at once: util/fast_read_dynamic_ptr.h Update()) and then blocks, holding the manager's
  lock, until every handle taken from the previous map is released (a handle shares ownership
  of the map it came from: ServingMap::GetUntypedServableHandle's aliasing shared_ptr). So a
  newly loaded version is routable at once but published AVAILABLE (model status, the state
  monitor, labels) only after the requests in flight on the old map finished, whatever
  servable they use; an unloading version waits for them the same way; "Servable not found
  for request: Latest(m)" / "Specific(m, n)"; with num_load_threads = 0 (the model server's
  default after startup) loads run inline in the manager's work loop, which therefore blocks
  while a version loads and retries; num_unload_threads = 0 likewise for unloads.
- aspired_versions_manager.cc: every 100 ms (manage_state_interval_micros) the manager thread
  flushes finished unaspired versions, processes pending aspired-versions requests (postponing
  one that re-aspires a version still being unloaded) and performs at most one action chosen by
  the policy, unloads before loads.
- availability_preserving_policy.cc: unload the lowest unaspired ready version only if no
  version is aspired, an aspired version is ready, or more than one unaspired version is ready;
  otherwise load the highest new aspired version. So a new version becomes AVAILABLE before an
  old one unloads, and a version that fails to load leaves the old one serving.
"""

from __future__ import annotations

import concurrent.futures
import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from testing.tfserving_standin import logs
from testing.tfserving_standin.bundle import Bundle
from testing.tfserving_standin.monitor import (
    EventBus,
    ManagerState,
    ServableId,
    ServableRequest,
    ServableState,
)
from testing.tfserving_standin.shares import Shares
from testing.tfserving_standin.status import OK, Code, Status, StatusError, error

MANAGE_STATE_INTERVAL_S = 0.1  # aspired_versions_manager.h manage_state_interval_micros


class HState(enum.Enum):
    NEW = "new"
    LOAD_REQUESTED = "load-requested"
    LOAD_APPROVED = "load-approved"
    LOADING = "loading"
    READY = "ready"
    UNLOAD_REQUESTED = "unload-requested"
    QUIESCING = "quiescing"
    QUIESCED = "quiesced"
    UNLOADING = "unloading"
    DISABLED = "disabled"
    ERROR = "error"


# What a version turns into: the source adapter's product (a SavedModel loader for a path),
# or an error servable. Load returns a Bundle or raises StatusError.
LoadFn = Callable[[ServableId], Bundle]


@dataclass
class Harness:
    id: ServableId
    load_fn: LoadFn | None
    state: HState = HState.NEW
    status: Status = OK
    is_aspired: bool = True
    should_retry: bool = True
    bundle: Bundle | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class ServingMap:
    """One published serving map: (name -> version -> (id, bundle)) of ready versions. Handles
    taken from it share it; Manager._update_serving_map() waits until none is left."""

    def __init__(self, versions: dict[str, dict[int, tuple[ServableId, Bundle]]]) -> None:
        self.versions = versions
        self._shares = Shares()

    def share(self) -> None:
        self._shares.take()

    def unshare(self) -> None:
        self._shares.drop()

    def wait_unshared(self) -> None:
        """FastReadDynamicPtr's ShareableOwnedPtr::Release(): until the last share is gone."""
        self._shares.wait_none()


class Handle:
    """A ServableHandle: the version, and the serving map it came from, stay alive until the
    handle is released."""

    def __init__(self, sid: ServableId, bundle: Bundle, serving_map: ServingMap) -> None:
        self.id = sid
        self.bundle = bundle
        self._serving_map = serving_map

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bundle.release()
        self._serving_map.unshare()


@dataclass(frozen=True)
class AspiredVersion:
    id: ServableId
    load_fn: LoadFn | None
    status: Status = OK  # an error ServableData (e.g. from the error adapter)


class Manager:
    def __init__(
        self,
        bus: EventBus,
        num_load_threads: int,
        max_num_load_retries: int,
        load_retry_interval_micros: int,
    ) -> None:
        self._bus = bus
        self._mu = threading.RLock()
        self._managed: dict[str, dict[int, Harness]] = {}
        self._serving_map = ServingMap({})
        self._serving_map_mu = threading.Lock()  # FastReadDynamicPtr's mu_
        self._pending_mu = threading.Lock()
        self._pending: dict[str, list[AspiredVersion]] = {}
        self._rmw_mu = threading.Lock()  # basic_manager_read_modify_write_mu_
        self._executor_mu = threading.Lock()
        self._num_load_threads = 0
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._max_retries = max_num_load_retries
        self._retry_interval_s = load_retry_interval_micros / 1e6
        self._stop = threading.Event()
        self.set_num_load_threads(num_load_threads)
        self._thread = threading.Thread(target=self._run, name="manage_state", daemon=True)
        self._thread.start()

    # --- target side (what the source calls) -----------------------------------------------

    def set_aspired_versions(self, name: str, versions: list[AspiredVersion]) -> None:
        """AspiredVersionsManager::EnqueueAspiredVersionsRequest(): the last one per name wins."""
        with self._pending_mu:
            self._pending[name] = versions

    # --- load threads ----------------------------------------------------------------------

    def num_load_threads(self) -> int:
        return self._num_load_threads

    def set_num_load_threads(self, n: int) -> None:
        """BasicManager::SetNumLoadThreads(): the old executor finishes its loads first."""
        with self._executor_mu:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            self._num_load_threads = n
            self._executor = (
                concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="BasicManager_Load")
                if n > 0
                else None
            )

    # --- requests ----------------------------------------------------------------------------

    def get_handle(self, request: ServableRequest) -> Handle:
        """BasicManager::ServingMap::GetUntypedServableHandle(): the current map, without the
        manager's lock (it may be held by an UpdateServingMap() waiting for older handles)."""
        with self._serving_map_mu:
            serving_map = self._serving_map
            serving_map.share()
        versions = serving_map.versions.get(request.name, {})
        if request.version is None:
            entry = versions[max(versions)] if versions else None
        else:
            entry = versions.get(request.version)
        if entry is None:
            serving_map.unshare()
            raise error(Code.NOT_FOUND, "Servable not found for request: ", request.debug_string())
        sid, bundle = entry
        bundle.acquire()
        return Handle(sid, bundle, serving_map)

    def list_available(self) -> list[ServableId]:
        with self._serving_map_mu:
            serving_map = self._serving_map
        return sorted(sid for vs in serving_map.versions.values() for sid, _ in vs.values())

    # --- internals ---------------------------------------------------------------------------

    def _publish(self, sid: ServableId, state: ManagerState, health: Status = OK) -> None:
        self._bus.publish(ServableState(sid, state, health))

    def _update_serving_map(self) -> None:
        """BasicManager::UpdateServingMap(), called with the manager's lock held: publish, then
        wait for the previous map's handles to be released."""
        new_map = ServingMap(
            {
                name: {
                    v: (h.id, h.bundle)
                    for v, h in versions.items()
                    if h.state == HState.READY and h.bundle is not None
                }
                for name, versions in self._managed.items()
            }
        )
        with self._serving_map_mu:
            old_map, self._serving_map = self._serving_map, new_map
        old_map.wait_unshared()

    def _harnesses(self, name: str) -> list[Harness]:
        return list(self._managed.get(name, {}).values())

    def _run(self) -> None:
        while not self._stop.is_set():
            begin = time.monotonic()
            try:
                self._flush_servables()
                self._handle_pending()
                self._invoke_policy_and_execute()
            except Exception as exc:  # never let the work loop die
                logs.error("aspired_versions_manager.cc", f"stand-in manager loop error: {exc!r}")
            delay = MANAGE_STATE_INTERVAL_S - (time.monotonic() - begin)
            if delay > 0:
                self._stop.wait(delay)

    def stop(self) -> None:
        self._stop.set()

    def _flush_servables(self) -> None:
        """AspiredVersionsManager::FlushServables()."""
        with self._rmw_mu, self._mu:
            for name in list(self._managed):
                for harness in self._harnesses(name):
                    if harness.state in (HState.NEW, HState.DISABLED, HState.ERROR) and (
                        not harness.is_aspired
                    ):
                        del self._managed[name][harness.id.version]
                if not self._managed[name]:
                    del self._managed[name]

    def _handle_pending(self) -> None:
        """AspiredVersionsManager::HandlePendingAspiredVersionsRequests()."""
        with self._rmw_mu, self._pending_mu:
            for name in list(self._pending):
                versions = self._pending[name]
                with self._mu:
                    numbers = {v.id.version for v in versions}
                    reaspired = any(
                        not h.is_aspired and h.id.version in numbers for h in self._harnesses(name)
                    )
                if reaspired:
                    continue  # sit on it until the re-aspired version is gone
                self._process_aspired(name, versions)
                del self._pending[name]

    def _process_aspired(self, name: str, versions: list[AspiredVersion]) -> None:
        """AspiredVersionsManager::ProcessAspiredVersionsRequest()."""
        with self._mu:
            next_versions = {v.id.version for v in versions}
            current = set()
            for harness in self._harnesses(name):
                if harness.is_aspired:
                    current.add(harness.id.version)
                if harness.id.version not in next_versions:
                    harness.is_aspired = False
                    harness.should_retry = False  # BasicManager::CancelLoadServableRetry()
            additions = next_versions - current
            for version in versions:
                if version.id.version not in additions:
                    continue
                if version.id.version in self._managed.get(name, {}):
                    logs.error(
                        "aspired_versions_manager.cc",
                        f"Internal error: Unable to transfer servable {version.id.debug_string()}"
                        " to 'basic_manager_': This servable is already being managed: "
                        f"{version.id.debug_string()}",
                    )
                    continue
                harness = Harness(version.id, version.load_fn)
                self._managed.setdefault(name, {})[version.id.version] = harness
                if not version.status.ok:
                    self._harness_error(harness, version.status)
                else:
                    self._publish(version.id, ManagerState.START)

    def _next_action(self) -> tuple[str, ServableId] | None:
        """GetNextAction(): the policy per stream, unloads sorted before loads."""
        actions: list[tuple[str, ServableId]] = []
        with self._mu:
            for name in sorted(self._managed):
                action = _availability_preserving(self._harnesses(name))
                if action is not None:
                    actions.append(action)
        actions.sort(key=lambda a: 0 if a[0] == "unload" else 1)
        return actions[0] if actions else None

    def _invoke_policy_and_execute(self) -> None:
        with self._rmw_mu:
            action = self._next_action()
            if action is None:
                return
            kind, sid = action
            if kind == "load":
                self._load_servable(sid)
            else:
                self._unload_servable(sid)

    def _healthy(self, sid: ServableId) -> Harness:
        """BasicManager::GetHealthyHarness()."""
        harness = self._managed.get(sid.name, {}).get(sid.version)
        if harness is None:
            raise error(
                Code.NOT_FOUND,
                "This servable is not being managed by the manager: ",
                sid.debug_string(),
            )
        if not harness.status.ok:
            raise StatusError(harness.status)
        return harness

    def _load_servable(self, sid: ServableId) -> None:
        """BasicManager::LoadServable() → LoadOrUnloadServable()."""
        try:
            with self._mu:
                harness = self._healthy(sid)
                if harness.state != HState.NEW:
                    raise error(Code.FAILED_PRECONDITION, "Duplicate load request")
                harness.state = HState.LOAD_REQUESTED
        except StatusError as exc:
            logs.error(
                "aspired_versions_manager.cc",
                f"Servable {sid.debug_string()} cannot be loaded: {exc.status}",
            )
            return
        with self._executor_mu:
            executor = self._executor
            if executor is not None:
                executor.submit(self._handle_load, harness)
                return
        self._handle_load(harness)

    def _handle_load(self, harness: Harness) -> None:
        """HandleLoadOrUnloadRequest(kLoad): approve, then ExecuteLoad()."""
        sid = harness.id
        with self._mu:
            harness.state = HState.LOAD_APPROVED
            logs.info(
                "loader_harness.cc", f"Approving load for servable version {sid.debug_string()}"
            )
        self._publish(sid, ManagerState.LOADING)
        with self._mu:
            harness.state = HState.LOADING
        logs.info("loader_harness.cc", f"Loading servable version {sid.debug_string()}")
        status, bundle = self._load_with_retries(harness)
        if status.ok and bundle is not None:
            if not harness.should_retry:
                # LoaderHarness::Load(): a load cancelled meanwhile is unloaded at once.
                with self._mu:
                    harness.state = HState.UNLOADING
                bundle.close()
                with self._mu:
                    harness.state = HState.DISABLED
                status = Status(Code.CANCELLED, "Loading of servable cancelled")
                self._publish(sid, ManagerState.END, status)
            else:
                with self._mu:
                    harness.bundle = bundle
                    harness.state = HState.READY
                    logs.info(
                        "loader_harness.cc",
                        f"Successfully loaded servable version {sid.debug_string()}",
                    )
                    self._update_serving_map()
                self._publish(sid, ManagerState.AVAILABLE)
                return
        else:
            with self._mu:
                self._harness_error(harness, status)
        logs.error(
            "aspired_versions_manager.cc",
            f"Servable {sid.debug_string()} cannot be loaded: {status}",
        )

    def _load_with_retries(self, harness: Harness) -> tuple[Status, Bundle | None]:
        """tensorflow_serving/util/retrier.cc Retry() around Loader::Load()."""
        description = f"Loading servable: {harness.id.debug_string()}"
        tries = 0
        status = OK
        bundle: Bundle | None = None
        while True:
            if tries > 0:
                if self._retry_interval_s > 0:
                    time.sleep(self._retry_interval_s)
                logs.info("retrier.cc", f"Retrying of {description} retry: {tries}")
            try:
                if harness.load_fn is None:
                    raise error(Code.INTERNAL, "No platform found for model")
                bundle = harness.load_fn(harness.id)
                status = OK
            except StatusError as exc:
                status = exc.status
            except Exception as exc:  # a stand-in bug must not kill the work loop
                status = Status(Code.UNKNOWN, f"tfserving-standin load failed: {exc!r}")
            if not status.ok:
                logs.error("retrier.cc", f"{description} failed: {status}")
            tries += 1
            if status.ok or tries >= self._max_retries + 1 or not harness.should_retry:
                break
        if not harness.should_retry:
            logs.info("retrier.cc", f"Retrying of {description} was cancelled.")
        if tries == self._max_retries + 1:
            logs.info(
                "retrier.cc",
                f"Retrying of {description} exhausted max_num_retries: {self._max_retries}",
            )
        return status, bundle

    def _harness_error(self, harness: Harness, status: Status) -> None:
        """LoaderHarness::ErrorInternal(): state error, kEnd published with the error."""
        harness.state = HState.ERROR
        harness.status = status
        self._publish(harness.id, ManagerState.END, status)
        logs.info(
            "loader_harness.cc",
            f"Encountered an error for servable version {harness.id.debug_string()}: {status}",
        )

    def _unload_servable(self, sid: ServableId) -> None:
        """BasicManager::UnloadServable(), executed inline (num_unload_threads = 0)."""
        try:
            with self._mu:
                harness = self._healthy(sid)
                if harness.state != HState.READY:
                    raise error(
                        Code.FAILED_PRECONDITION,
                        "Servable not loaded, or unload already requested/ongoing",
                    )
                harness.state = HState.UNLOAD_REQUESTED
                harness.state = HState.QUIESCING
                logs.info("loader_harness.cc", f"Quiescing servable version {sid.debug_string()}")
        except StatusError as exc:
            logs.error(
                "aspired_versions_manager.cc",
                f"Servable {sid.debug_string()} cannot be unloaded: {exc.status}",
            )
            return
        with self._mu:
            self._publish(sid, ManagerState.UNLOADING)
            self._update_serving_map()
            harness.state = HState.QUIESCED
            logs.info("loader_harness.cc", f"Done quiescing servable version {sid.debug_string()}")
            harness.state = HState.UNLOADING
            logs.info(
                "loader_harness.cc", f"Unloading just-loaded servable version {sid.debug_string()}"
            )
            bundle, harness.bundle = harness.bundle, None
        if bundle is not None:
            bundle.close()
        with self._mu:
            harness.state = HState.DISABLED
            logs.info("loader_harness.cc", f"Done unloading servable version {sid.debug_string()}")
        self._publish(sid, ManagerState.END)


def _availability_preserving(harnesses: list[Harness]) -> tuple[str, ServableId] | None:
    """tensorflow_serving/core/availability_preserving_policy.cc GetNextAction()."""
    has_aspired = False
    has_aspired_serving = False
    unaspired_serving: list[Harness] = []
    for h in harnesses:
        if h.is_aspired:
            has_aspired = True
            if h.state == HState.READY:
                has_aspired_serving = True
        elif h.state == HState.READY:
            unaspired_serving.append(h)
    if (not has_aspired or has_aspired_serving or len(unaspired_serving) > 1) and (
        unaspired_serving
    ):
        lowest = min(unaspired_serving, key=lambda h: h.id.version)
        return "unload", lowest.id
    # aspired_version_policy.cc GetHighestAspiredNewServableId()
    new = [h for h in harnesses if h.is_aspired and h.state == HState.NEW]
    if new:
        return "load", max(new, key=lambda h: h.id.version).id
    return None
