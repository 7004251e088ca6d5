"""The only module that talks to the API server: server-side apply, status patches, events.

Reads never come through here: the reconciler works from kopf's watch-fed indexes, so a
converged operator sends nothing at all.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from importlib import metadata
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from servedmodel_operator import FIELD_MANAGER, GROUP, KIND, PLURAL, VERSION

log = logging.getLogger(__name__)
USER_AGENT = f"{FIELD_MANAGER}/{metadata.version('servedmodel')}"


class Kube:
    def __init__(self, api_client: client.ApiClient) -> None:
        api_client.user_agent = USER_AGENT
        self._api = api_client
        self._dynamic: DynamicClient | None = None
        self._lock = threading.Lock()
        self._objects = client.CustomObjectsApi(api_client)
        self._events = client.EventsV1Api(api_client)
        self._instance = f"{FIELD_MANAGER}-{socket.gethostname()}"

    @classmethod
    def from_environment(cls, pool_size: int) -> Kube:
        """In-cluster credentials when running in a pod, else KUBECONFIG / ~/.kube/config."""
        configuration = client.Configuration()
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(client_configuration=configuration)
        configuration.connection_pool_maxsize = pool_size
        return cls(client.ApiClient(configuration))

    def _resources(self) -> DynamicClient:
        with self._lock:  # discovery once, on first use
            if self._dynamic is None:
                self._dynamic = DynamicClient(self._api)
            return self._dynamic

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply under the operator's one field manager; returns the live object."""
        resource = self._resources().resources.get(
            api_version=manifest["apiVersion"], kind=manifest["kind"]
        )
        meta = manifest["metadata"]
        live = resource.server_side_apply(
            body=dict(manifest),
            name=meta["name"],
            namespace=meta.get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        result: dict[str, Any] = live.to_dict()
        return result

    def patch_status(
        self, namespace: str, name: str, status_patch: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource (never spec); the patched object, or None if gone."""
        try:
            patched = self._objects.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": dict(status_patch)}
            )
        except ApiException as exc:
            if exc.status == 404:  # deleted meanwhile: nothing to report on
                return None
            raise
        return cast(dict[str, Any], patched)

    def event(
        self, namespace: str, name: str, uid: str, type_: str, reason: str, message: str
    ) -> None:
        """Post an events.k8s.io/v1 Event about a ServedModel.

        Best effort: a failed post never fails a reconcile."""
        now = datetime.datetime.now(datetime.UTC)
        body = client.EventsV1Event(
            # Named like client-go's recorder does: <object>.<unix nanoseconds in hex>.
            metadata=client.V1ObjectMeta(name=f"{name}.{time.time_ns():x}", namespace=namespace),
            event_time=now,
            type=type_,
            reason=reason,
            note=message[:1024],
            action="Reconcile",
            reporting_controller=f"{GROUP}/{FIELD_MANAGER}",
            reporting_instance=self._instance[:128],
            regarding=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}", kind=KIND, name=name, namespace=namespace, uid=uid
            ),
        )
        try:
            self._events.create_namespaced_event(namespace, body)
        except ApiException as exc:
            log.warning("could not post event %s on %s/%s: %s", reason, namespace, name, exc.reason)
