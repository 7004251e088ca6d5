"""The only module that talks to the API server: the kubeconfig, ServedModels, events and the
service proxy. Every API failure leaves here as a CliError with one line that says what was
refused (verb, resource, namespace) and why."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

from servedmodel_cli import GROUP, KIND, PLURAL, RESOURCE, VERSION
from servedmodel_cli.errors import CliError, reason

IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# A request to the API server fails once, fast: urllib3's default retries would repeat a
# refused connection three times. Redirects are never followed (the service proxy passes a
# pod's redirect through, and it may point anywhere): a 3xx is returned as it is.
RETRIES = urllib3.Retry(
    total=1, connect=1, read=0, redirect=0, raise_on_redirect=False, backoff_factor=0.2
)


def _kubeconfig_paths(explicit: str | None) -> tuple[str, list[Path]]:
    """The kubeconfig setting (for the client) and its files (to check they exist)."""
    if explicit:
        return explicit, [Path(explicit).expanduser()]
    value = os.environ.get("KUBECONFIG", "")
    if value:
        return value, [Path(p).expanduser() for p in value.split(os.pathsep) if p]
    default = "~/.kube/config"
    return default, [Path(default).expanduser()]


def _status_message(body: Any) -> dict[str, Any]:
    """A Kubernetes Status from an error body ({} when the body is something else)."""
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    try:
        parsed = json.loads(body) if isinstance(body, str) and body else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) and parsed.get("kind") == "Status" else {}


@dataclass
class Session:
    api: client.ApiClient
    namespace: str
    server: str
    context: str
    timeout: float

    # --- errors -------------------------------------------------------------------------------

    def unreachable(self, exc: BaseException) -> CliError:
        return CliError(f"cannot reach the API server at {self.server}: {reason(exc)}")

    def api_error(
        self, exc: ApiException, verb: str, resource: str, name: str | None = None
    ) -> CliError:
        """One line for a refused API request: who was refused what, and the server's words."""
        status = _status_message(exc.body)
        message = str(status.get("message") or exc.reason or "").strip()
        what = f'{resource} "{name}"' if name else resource
        where = f'in namespace "{self.namespace}"'
        if exc.status == 0:
            return CliError(f"cannot reach the API server at {self.server}: {message}")
        if exc.status == 401:
            return CliError(
                f"unauthorized: the API server at {self.server} did not accept the credentials "
                f"of kubeconfig context {self.context!r} (expired token or certificate?)"
            )
        if exc.status == 403:
            return CliError(f"forbidden: no permission to {verb} {what} {where}: {message}")
        return CliError(f"the API server refused to {verb} {what} {where}: {exc.status} {message}")

    # --- reads --------------------------------------------------------------------------------

    def servedmodel(self, name: str) -> dict[str, Any]:
        custom = client.CustomObjectsApi(self.api)
        try:
            obj: dict[str, Any] = custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=self.timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                details = _status_message(exc.body).get("details") or {}
                if details.get("name") == name:
                    raise CliError(
                        f'{KIND} "{name}" not found in namespace "{self.namespace}"'
                    ) from None
                raise CliError(
                    f"the {KIND} API ({RESOURCE}/{VERSION}) is not served by the API server at "
                    f"{self.server}: is the CRD installed? (kubectl apply -f crds/)"
                ) from None
            raise self.api_error(exc, "get", RESOURCE, name) from None
        except urllib3.exceptions.HTTPError as exc:
            raise self.unreachable(exc) from None
        return obj

    def events(self, name: str) -> list[dict[str, Any]]:
        """Every events.k8s.io Event regarding the ServedModel `name` (any order)."""
        events = client.EventsV1Api(self.api)
        try:
            listed = events.list_namespaced_event(
                self.namespace,
                field_selector=f"regarding.name={name},regarding.kind={KIND}",
                _request_timeout=self.timeout,
                _preload_content=False,
            )
        except ApiException as exc:
            raise self.api_error(exc, "list", "events.events.k8s.io") from None
        except urllib3.exceptions.HTTPError as exc:
            raise self.unreachable(exc) from None
        items: list[dict[str, Any]] = json.loads(listed.data).get("items") or []
        return items

    # --- the service proxy ----------------------------------------------------------------------

    def proxy_post(
        self, service: str, port: str, path: str, body: dict[str, Any]
    ) -> tuple[int, bytes]:
        """POST through the API server's service proxy; (status, body) of whoever answered.

        An answer from TF Serving (any status) is returned; an API server refusal (RBAC,
        a Service without reachable endpoints) is raised as a CliError."""
        url = (
            f"/api/v1/namespaces/{quote(self.namespace, safe='')}/services/"
            f"{quote(service, safe='')}:{quote(port, safe='')}/proxy{path}"
        )
        try:
            response = self.api.call_api(
                url,
                "POST",
                header_params={"Content-Type": "application/json", "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            data = exc.body if isinstance(exc.body, bytes) else str(exc.body or "").encode()
            target = f"service {self.namespace}/{service} (port {port})"
            if 300 <= int(exc.status or 0) < 400:
                where = str((exc.headers or {}).get("Location") or "nowhere")[:200]
                raise CliError(
                    f"{target} answered HTTP {exc.status}, a redirect to {where!r}: not followed"
                ) from None
            status = _status_message(data)
            if not status:
                return int(exc.status), data  # TF Serving's own answer, passed through
            message = str(status.get("message") or exc.reason or "")
            if exc.status == 403:
                raise CliError(
                    f"forbidden: no permission to create services/proxy for {target}: {message}"
                ) from None
            if exc.status in (404, 502, 503):
                raise CliError(
                    f"the API server could not proxy to {target}: {message} (it says so when "
                    "no ready pod backs the Service, or when it cannot reach pod IPs: then "
                    "use --address HOST:PORT)"
                ) from None
            raise self.api_error(exc, "create", "services/proxy", service) from None
        except urllib3.exceptions.HTTPError as exc:
            raise self.unreachable(exc) from None
        return int(response.status), bytes(response.data)


def connect(
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
    as_user: str | None = None,
    as_group: str | None = None,
    timeout: float = 30.0,
) -> Session:
    """A session from the kubeconfig, as kubectl would build it: --kubeconfig, else
    $KUBECONFIG (files joined by ':'), else ~/.kube/config; inside a pod without any of them,
    the pod's ServiceAccount."""
    setting, files = _kubeconfig_paths(kubeconfig)
    existing = [f for f in files if f.is_file()]
    try:
        if not existing and not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            configuration.retries = RETRIES
            api = client.ApiClient(configuration)
            context_name = "in-cluster"
            default_ns = (
                IN_CLUSTER_NAMESPACE.read_text().strip()
                if IN_CLUSTER_NAMESPACE.is_file()
                else "default"
            )
        else:
            if not existing:
                raise CliError(
                    f"no kubeconfig: {', '.join(str(f) for f in files)} does not exist "
                    "(set KUBECONFIG or pass --kubeconfig)"
                )
            contexts, current = config.list_kube_config_contexts(config_file=setting)
            chosen = (
                next((c for c in contexts if c["name"] == context), None) if context else current
            )
            if chosen is None:
                names = ", ".join(c["name"] for c in contexts) or "none"
                raise CliError(
                    f"no context {context!r} in the kubeconfig (contexts: {names})"
                    if context
                    else "the kubeconfig names no current context (pass --context)"
                )
            context_name = chosen["name"]
            default_ns = (chosen.get("context") or {}).get("namespace") or "default"
            configuration = client.Configuration()
            config.load_kube_config(
                config_file=setting,
                context=context_name,
                client_configuration=configuration,
                persist_config=False,
            )
            configuration.retries = RETRIES
            if not configuration.verify_ssl:
                # The kubeconfig asks for it (insecure-skip-tls-verify): kubectl says nothing.
                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            api = client.ApiClient(configuration)
    except (ConfigException, yaml.YAMLError, OSError) as exc:
        raise CliError(f"cannot use the kubeconfig ({setting}): {exc}") from None
    if as_user:
        api.set_default_header("Impersonate-User", as_user)
    if as_group:
        api.set_default_header("Impersonate-Group", as_group)
    return Session(
        api=api,
        namespace=namespace or default_ns,
        server=str(api.configuration.host),
        context=context_name,
        timeout=timeout,
    )
