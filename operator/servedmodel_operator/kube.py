"""The only module that talks to the API server: server-side apply, status patches, events.

Reads never come through here: the reconciler works from kopf's watch-fed indexes, so a
converged operator sends nothing at all. Requests go through the official client's
configuration, authentication and connection pool, as raw JSON: the handful of kinds we write
have fixed paths, so neither discovery nor model (de)serialisation is worth its CPU at scale.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from servedmodel_operator import FIELD_MANAGER, GROUP, KIND, PLURAL, VERSION

log = logging.getLogger(__name__)
USER_AGENT = f"{FIELD_MANAGER}/{metadata.version('servedmodel')}"
REQUEST_TIMEOUT = (10, 60)  # connect, read

# (apiVersion, kind) -> the collection path under /namespaces/<ns>/, for what we write.
_PATHS = {
    ("v1", "ConfigMap"): "/api/v1/namespaces/{ns}/configmaps",
    ("v1", "Service"): "/api/v1/namespaces/{ns}/services",
    ("apps/v1", "Deployment"): "/apis/apps/v1/namespaces/{ns}/deployments",
    ("batch/v1", "Job"): "/apis/batch/v1/namespaces/{ns}/jobs",
    (f"{GROUP}/{VERSION}", KIND): f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/{PLURAL}",
    ("events.k8s.io/v1", "Event"): "/apis/events.k8s.io/v1/namespaces/{ns}/events",
}


class Kube:
    def __init__(self, api_client: client.ApiClient) -> None:
        api_client.user_agent = USER_AGENT
        self._api = api_client
        self._instance = f"{FIELD_MANAGER}-{socket.gethostname()}"[:128]

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

    def _request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        """One request, JSON in and out; a non-2xx answer raises ApiException."""
        response = self._api.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=dict(body) if body is not None else None,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=REQUEST_TIMEOUT,
        )
        result: dict[str, Any] = json.loads(response.data)
        return result

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply under the operator's one field manager; returns the live object."""
        meta = manifest["metadata"]
        collection = _PATHS[(manifest["apiVersion"], manifest["kind"])].format(ns=meta["namespace"])
        return self._request(
            "PATCH",
            f"{collection}/{meta['name']}",
            manifest,
            "application/apply-patch+yaml",
            [("fieldManager", FIELD_MANAGER), ("force", "true")],
        )

    def patch_status(
        self, namespace: str, name: str, status_patch: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource (never spec); the patched object, or None if gone."""
        collection = _PATHS[(f"{GROUP}/{VERSION}", KIND)].format(ns=namespace)
        try:
            return self._request(
                "PATCH",
                f"{collection}/{name}/status",
                {"status": dict(status_patch)},
                "application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status == 404:  # deleted meanwhile: nothing to report on
                return None
            raise

    def secret_keys(self, namespace: str, name: str) -> frozenset[str] | None:
        """The key names of a Secret (None if it does not exist). Values are dropped at once:
        the operator checks that credentials exist, it never handles them."""
        try:
            secret = self._request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return frozenset((secret.get("data") or {}).keys())

    def event(
        self, namespace: str, name: str, uid: str, type_: str, reason: str, message: str
    ) -> None:
        """Post an events.k8s.io/v1 Event about a ServedModel.

        Best effort: a failed post never fails a reconcile."""
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            # Named like client-go's recorder does: <object>.<unix nanoseconds in hex>.
            "metadata": {"name": f"{name}.{time.time_ns():x}", "namespace": namespace},
            "eventTime": now,
            "type": type_,
            "reason": reason,
            "note": message[:1024],
            "action": "Reconcile",
            "reportingController": f"{GROUP}/{FIELD_MANAGER}",
            "reportingInstance": self._instance,
            "regarding": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": name,
                "namespace": namespace,
                "uid": uid,
            },
        }
        try:
            self._request(
                "POST",
                _PATHS[("events.k8s.io/v1", "Event")].format(ns=namespace),
                body,
                "application/json",
            )
        except ApiException as exc:
            log.warning("could not post event %s on %s/%s: %s", reason, namespace, name, exc.reason)
