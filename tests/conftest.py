"""Fixtures shared by every suite: the local control plane and a namespace per test.

The cluster fixture and `make cluster-up` run the same code (testing.localcluster.cluster.up): a
cluster that is already healthy is reused and left running; one started here is stopped at
the end of the session. Under pytest-xdist the workers share one cluster (tests/workers.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config

from testing.localcluster import cluster as localcluster
from testing.localcluster import netguard, s3
from tests import workers
from tests.guard import PYTEST_NETGUARD_LOG
from tests.standin import summary as standin_summary


def pytest_configure(config: pytest.Config) -> None:
    # The machines' network rule, enforced in this process too: tests may reach loopback only.
    netguard.install(PYTEST_NETGUARD_LOG)
    workers.configure(config)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") == "loadgroup":
        return workers.GroupScheduling(config, log)
    return None


def pytest_collection_finish(session: pytest.Session) -> None:
    standin_summary.collected(session.config, (item.nodeid for item in session.items))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    standin_summary.collected(node.config, ids)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    workers.stop_if_this_run_started_it(session.config)
    refused = netguard.refused(PYTEST_NETGUARD_LOG)
    if refused:
        print("\nnetguard: the test process tried to leave loopback:\n" + "\n".join(refused))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say plainly which suites did not run: a skip is never a pass."""
    standin_summary.write(terminalreporter)
    skipped = terminalreporter.stats.get("skipped", [])
    e2e = [r for r in skipped if "[kind]" in r.nodeid]
    if e2e:
        reason = e2e[0].longrepr[2] if isinstance(e2e[0].longrepr, tuple) else str(e2e[0].longrepr)
        terminalreporter.write_sep(
            "=", "serving scenarios on kind (real TF Serving): NOT RUN", yellow=True, bold=True
        )
        terminalreporter.write_line(f"{len(e2e)} tests were not run: {reason}")
        terminalreporter.write_line(
            "The same scenarios ran on the TF Serving stand-in above ([standin]); on real "
            "TF Serving they run in .github/workflows/e2e-kind.yml (make e2e-kind)."
        )


@pytest.fixture(scope="session")
def cluster() -> Iterator[localcluster.Cluster]:
    shared = workers.shared_cluster() if workers.worker() else localcluster.running()
    with shared as running:
        since = netguard.mark(running.netguard_log)
        yield running
        # The operator, the runner, exporters and TF Serving stand-ins run under the guard.
        refused = netguard.refused(running.netguard_log, since)
        assert not refused, "a process tried to leave loopback:\n" + "\n".join(refused)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3.S3Server]:
    """A real S3-compatible server (SeaweedFS) on loopback, for the object-store tests."""
    server = s3.start(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def api_client(cluster: localcluster.Cluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


@pytest.fixture(scope="session")
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def apps(api_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api_client)


@pytest.fixture(scope="session")
def batch(api_client: client.ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(api_client)


@pytest.fixture
def namespace(core: client.CoreV1Api, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    base = request.node.name.lower().replace("_", "-")[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)
