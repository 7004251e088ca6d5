"""The network guard's audit hook (see sitecustomize.py beside it)."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import time
from typing import Any

_installed: list[str] = []


def _loopback(host: object) -> bool:
    if not isinstance(host, str):
        return True  # AF_UNIX paths (bytes) and the like
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


def install(log: str) -> None:
    """Refuse (PermissionError) and record in `log` every connect outside 127.0.0.0/8 or ::1,
    and every name lookup of anything but localhost or a loopback address, in this process."""
    if _installed:
        return
    _installed.append(log)

    def refuse(what: str) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid={os.getpid()} {sys.argv[:3]} {what}\n"
        try:
            with open(log, "a") as out:
                out.write(line)
        finally:
            raise PermissionError(f"netguard: {what} is outside loopback (127.0.0.0/8): refused")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "socket.connect":
            sock, address = args
            if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
                refuse(f"connect to {address[0]}:{address[1]}")
        elif event == "socket.getaddrinfo":
            host = args[0]
            if isinstance(host, bytes):
                host = host.decode(errors="replace")
            if host is not None and not _loopback(host):
                refuse(f"name lookup of {host!r}")

    sys.addaudithook(hook)
