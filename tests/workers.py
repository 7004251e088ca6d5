"""The suites on several pytest-xdist workers sharing one local cluster (`make test` runs
`pytest -n N --dist loadgroup`).

- One cluster for every worker: the first worker to need it starts it under a file lock, the
  others find it healthy and reuse it. A worker never stops it (another may still use it): the
  controller process stops it at the end of the run if a worker of this run started it.
- Tests that share something beyond their own namespace run on one worker, one after another:
  the scheduler (GroupScheduling) sends each group whole to one worker. A module is a group (its
  module-scoped fixtures are built once); the exporter suite is one group (its session's models
  are built once, in one process), the stand-in suite likewise; CLUSTER_WIDE below is one group.
- Tests marked `exclusive` restart or reconfigure the shared control plane (the API server
  restart of the zero-loss suite); `make test` runs them alone after the parallel run.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

from testing.localcluster import cluster as localcluster

# Shared by the controller and its workers (they inherit its environment): which run this is.
RUN_ENV = "SERVEDMODEL_TEST_RUN"

# Suites whose session fixtures are expensive and shared by every module of the suite.
SUITE_GROUPS = {"tests/exporter": "exporter", "tests/standin": "standin"}

# Modules that install or change cluster-scoped objects, or objects in a fixed namespace, which
# the others' tests would see: they run one after another on one worker.
CLUSTER_WIDE = {
    # `kubectl apply -k manifests/` into servedmodel-system: admission policies, ClusterRoles.
    "tests/integration/test_install.py",
    "tests/integration/test_pod_surface.py",  # servedmodel-system's PodDisruptionBudget
    "tests/integration/test_release.py",  # the release bundle into servedmodel-system
    "tests/integration/test_helm.py",  # the chart's cluster-scoped objects
    # They install and delete the admission policies that decide their impersonated users'
    # creates (and would decide the other tenancy modules').
    "tests/integration/test_tenancy_secrets.py",
    "tests/integration/test_tenancy_routes.py",
    "tests/integration/test_tenancy.py",
    "tests/integration/test_tenancy_bounds.py",
}


def group(nodeid: str) -> str:
    """The group a test runs in: whole, on one worker."""
    module = nodeid.split("::")[0]
    if module in CLUSTER_WIDE:
        return "cluster-wide"
    return SUITE_GROUPS.get(str(Path(module).parent), module)


class GroupScheduling(LoadScopeScheduling):
    """xdist's scope scheduling with our groups for scopes, in collection order (the exporter
    and integration groups, the longest, first; the unit tests last, as filler)."""

    def __init__(self, config: pytest.Config, log: Any = None) -> None:
        super().__init__(config, log)
        config.option.loadscopereorder = False

    def _split_scope(self, nodeid: str) -> str:
        return group(nodeid)


def worker() -> str | None:
    """This process's xdist worker id (gw0, gw1, ...), or None in a run without workers."""
    return os.environ.get("PYTEST_XDIST_WORKER")


def is_controller(config: pytest.Config) -> bool:
    return worker() is None and bool(getattr(config.option, "numprocesses", None))


def configure(config: pytest.Config) -> None:
    if is_controller(config):
        os.environ[RUN_ENV] = uuid.uuid4().hex


def _owner_file(state_dir: Path) -> Path:
    return state_dir.parent / f"{state_dir.name}.started-by-test-run"


@contextmanager
def shared_cluster(
    state_dir: Path = localcluster.DEFAULT_STATE_DIR,
) -> Iterator[localcluster.Cluster]:
    """The cluster for a worker: started once under a lock, never stopped here."""
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(state_dir.parent / f"{state_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            was_running = localcluster.healthy(state_dir) is not None
            running = localcluster.up(state_dir)
            if not was_running:
                _owner_file(state_dir).write_text(os.environ.get(RUN_ENV, ""))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    yield running


def stop_if_this_run_started_it(
    config: pytest.Config, state_dir: Path = localcluster.DEFAULT_STATE_DIR
) -> None:
    """At the controller's end: stop the cluster a worker of this run started."""
    if not is_controller(config):
        return
    owner = _owner_file(state_dir)
    if owner.exists() and owner.read_text() == os.environ.get(RUN_ENV):
        owner.unlink()
        localcluster.down(state_dir)
