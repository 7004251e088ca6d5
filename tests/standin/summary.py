"""The terminal summary of TF Serving's own end-to-end suite (test_tfserving_suite.py): its tests
that were not run, and why. Called from the root conftest, the one conftest that the process
printing the summary loads with or without xdist workers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

SUITE_FILE = "test_tfserving_suite.py"
# The property the suite's test records (record_property): how many of its tests ran, how long.
RUN_PROPERTY = "tfserving_suite_run"

_SELECTED = pytest.StashKey[bool]()


def collected(config: pytest.Config, nodeids: Iterable[str]) -> None:
    if any(nodeid.split("::")[0].endswith(SUITE_FILE) for nodeid in nodeids):
        config.stash[_SELECTED] = True


def _run(terminalreporter: pytest.TerminalReporter) -> dict[str, Any] | None:
    for reports in terminalreporter.stats.values():
        for report in reports:
            for name, value in getattr(report, "user_properties", ()):
                if name == RUN_PROPERTY:
                    return dict(value)
    return None


def write(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    if not config.stash.get(_SELECTED, False):
        return
    from tests.standin import test_tfserving_suite as suite

    run = _run(terminalreporter)
    ran = "" if run is None else f"; {run['ran']} run in {run['seconds']:.0f} s"
    terminalreporter.write_sep(
        "=",
        f"TF Serving's own end-to-end suite: {len(suite.OUT_OF_SCOPE)} tests NOT RUN{ran}",
        yellow=True,
        bold=True,
    )
    for name, reason in suite.OUT_OF_SCOPE.items():
        terminalreporter.write_line(f"NOT RUN {name}: {reason}")
