"""The exporter suite's fixture: every model of models.py, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.exporter.models import build


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build(tmp_path_factory.mktemp("models"))
