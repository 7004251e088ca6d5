"""Logging: one line per event, text or JSON, each object's namespace/name as structured fields.

kopf's own formatters do the formatting (text with a `[namespace/name]` prefix, or JSON with an
`object` field); our records carry the same `k8s_ref` extra kopf's object loggers attach, so
both render the same way.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import kopf

from servedmodel_operator import GROUP, KIND, VERSION

FORMATS = ("text", "json")


def configure(level: str, log_format: str) -> None:
    kopf.configure(
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
        log_prefix=log_format != "json",
    )
    logging.getLogger().setLevel(level.upper())
    logging.getLogger("kubernetes.client.rest").setLevel(logging.WARNING)
    # kopf's per-object lines for index and event handlers: one per watch event, noise at scale.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)


class ObjectLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger whose every record names one ServedModel."""

    def __init__(self, logger: logging.Logger, namespace: str, name: str, uid: str = "") -> None:
        ref = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "namespace": namespace,
            "name": name,
            "uid": uid,
        }
        super().__init__(logger, {"k8s_ref": ref})

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs
