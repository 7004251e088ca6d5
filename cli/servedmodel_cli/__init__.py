"""`servedmodel` (also the kubectl plugin `kubectl-servedmodel`): day-2 operations on
ServedModels from a workstation, with the current kubeconfig, as kubectl would.

    servedmodel status NAME [-o json]
    servedmodel predict NAME [--version N | --label L] (--json FILE | --instances JSON)
                        [--address HOST:PORT [--grpc]]
    servedmodel inspect NAME [--version N] [-o json]
    servedmodel wait NAME [--for ready|version=N] [--timeout 5m]

No TensorFlow unless --grpc (TF Serving's gRPC protos import TensorFlow's).
"""

from __future__ import annotations

GROUP = "serving.servedmodel.io"
VERSION = "v1alpha1"
PLURAL = "servedmodels"
KIND = "ServedModel"
RESOURCE = f"{PLURAL}.{GROUP}"
