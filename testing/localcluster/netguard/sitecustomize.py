"""The network rule of the development machines, enforced inside every Python process the
tests, the demo and the bench start (the operator, the runner, exporters, TF Serving
stand-ins): a connection to anything outside 127.0.0.0/8 (or ::1), or a name lookup of
anything but localhost, is refused with PermissionError and recorded in the file named by
SERVEDMODEL_NETGUARD_LOG, which the test session and the bench check is empty.

Loaded through PYTHONPATH (Python imports `sitecustomize` at start-up) and built on audit
hooks (PEP 578), so it sees every socket.connect, whichever library makes it.
"""

from __future__ import annotations

import os

if os.environ.get("SERVEDMODEL_NETGUARD_LOG"):
    from localcluster_netguard_hook import install

    install(os.environ["SERVEDMODEL_NETGUARD_LOG"])
