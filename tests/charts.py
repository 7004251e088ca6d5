"""Render charts/servedmodel with the real Helm and manifests/ with the real kustomize (kubectl's),
both Go-built and cached by testing/localcluster/build.py, and parse what they print."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from testing.localcluster import build

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "servedmodel"
RELEASE = "servedmodel"
SYSTEM = "servedmodel-system"
Key = tuple[str, str, str | None, str]  # apiVersion, kind, namespace, name

# Helm's own state (repositories, registry logins, plugins) under a private directory, never
# the user's: the tests read and write nothing of theirs.
_HELM_HOME = Path(tempfile.gettempdir()) / f"servedmodel-helm-home-{os.getuid()}"


def helm_binary() -> Path:
    return build.build_helm() / "helm"


def kubectl_binary() -> Path:
    return build.build_kubernetes() / "kubectl"


def helm_env(kubeconfig: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_")}
    env.update(
        HELM_CACHE_HOME=str(_HELM_HOME / "cache"),
        HELM_CONFIG_HOME=str(_HELM_HOME / "config"),
        HELM_DATA_HOME=str(_HELM_HOME / "data"),
        KUBECONFIG=str(kubeconfig) if kubeconfig else os.devnull,
    )
    return env


def helm(
    *args: str, kubeconfig: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(helm_binary()), *args],
        env=helm_env(kubeconfig),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML resolves YAML 1.1, where `1e-05` (no dot) is a string; kustomize prints floats
    that way and the API server (YAML 1.2, JSON) reads them as numbers. Parse like the API
    server does, so that a float is a float whichever tool printed it."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)$"),
    list("-+0123456789."),
)


def parse(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.load_all(text, Loader=_Yaml12Loader) if d]  # a SafeLoader


def template(*args: str, namespace: str = SYSTEM, release: str = RELEASE) -> list[dict[str, Any]]:
    """`helm template` of the chart, the CRD included (crds/ is not rendered otherwise)."""
    out = helm("template", release, str(CHART), "--namespace", namespace, "--include-crds", *args)
    return parse(out.stdout)


def kustomize(path: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [str(kubectl_binary()), "kustomize", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return parse(done.stdout)


def key(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])


def by_key(objects: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    keyed = {key(o): o for o in objects}
    assert len(keyed) == len(objects), "two objects with the same identity"
    return keyed
