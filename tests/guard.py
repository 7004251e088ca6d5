"""Where the network guard of the pytest process itself logs refused connections (installed by
tests/conftest.py; a test that starts a client process under the guard may point it here)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PYTEST_NETGUARD_LOG = Path(tempfile.gettempdir()) / f"servedmodel-netguard-{os.getpid()}.log"
