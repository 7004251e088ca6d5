"""adapters/kube.py against a real HTTP server on loopback (aiohttp), playing an API server
that throttles: API Priority and Fairness answers 429 with Retry-After when a request's
priority level is full, and client-go waits that long and tries again (a bounded number of
times). So does the operator's client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import kopf
import pytest
from aiohttp import web
from servedmodel_operator.adapters import kube
from servedmodel_operator.adapters.kube import ApiError, Kube


def _run(
    answers: list[tuple[int, dict[str, str]]], call: Callable[[Kube], Any]
) -> tuple[Any, list[float]]:
    """Serve `answers` in turn (status, headers; the last repeats), run `call` against them;
    the result (or the exception) and when each request arrived."""
    seen: list[float] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(time.monotonic())
        status, headers = answers[min(len(seen), len(answers)) - 1]
        body = {"kind": "Status", "reason": "TooManyRequests", "message": "throttled"}
        if status == 200:
            body = {"kind": "ConfigMap", "metadata": {"name": "x"}}
        return web.json_response(body, status=status, headers=headers)

    async def main() -> Any:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        client = Kube(connect=lambda: kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}"))
        try:
            return await call(client)
        except ApiError as exc:
            return exc
        finally:
            await client.close()
            await runner.cleanup()

    return asyncio.run(main()), seen


def _get(client: Kube) -> Any:
    return client.get("v1", "ConfigMap", "ml", "x")


def test_a_throttled_request_waits_for_retry_after_and_succeeds() -> None:
    result, seen = _run([(429, {"Retry-After": "1"}), (429, {"Retry-After": "0"}), (200, {})], _get)
    assert result == {"kind": "ConfigMap", "metadata": {"name": "x"}}
    assert len(seen) == 3
    assert seen[1] - seen[0] >= 0.95  # the server's Retry-After, honoured
    assert seen[2] - seen[1] < 0.9


def test_throttling_that_lasts_ends_in_the_429_after_a_bounded_number_of_tries() -> None:
    result, seen = _run([(429, {"Retry-After": "0"})], _get)
    assert isinstance(result, ApiError) and result.status == 429
    assert not result.permanent  # the work queue retries it later, with backoff
    assert len(seen) == 1 + kube.THROTTLED_RETRIES


def test_other_errors_are_not_retried() -> None:
    result, seen = _run([(422, {"Retry-After": "0"})], _get)
    assert isinstance(result, ApiError) and result.status == 422 and len(seen) == 1


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), (None, 1.0), ("soon", 1.0), ("-5", 0.0), ("3600", kube.MAX_RETRY_AFTER)],
)
def test_retry_after_is_read_and_bounded(header: str | None, seconds: float) -> None:
    assert kube.retry_after(header) == seconds


def test_an_owner_kind_the_api_server_has_not_mapped_yet_is_a_transient_refusal() -> None:
    """The 403 of OwnerReferencesPermissionEnforcement for a CRD created moments ago (seen on
    a fresh cluster by `make demo`: the ServedModel stalled as ApplyRejected) is retried; any
    other 403 is the request's own fault."""
    unmapped = (
        'configmaps "mnist-tfserving" is forbidden: cannot set blockOwnerDeletion in this case '
        "because cannot find RESTMapping for APIVersion serving.servedmodel.io/v1alpha1 Kind "
        'ServedModel: no matches for kind "ServedModel" in version '
        '"serving.servedmodel.io/v1alpha1"'
    )
    assert not ApiError(403, "Forbidden", unmapped).permanent
    denied = 'configmaps "x" is forbidden: User "u" cannot patch resource "configmaps"'
    assert ApiError(403, "Forbidden", denied).permanent
    assert ApiError(422, "Invalid", unmapped).permanent
