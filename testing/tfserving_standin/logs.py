"""Log lines on stderr in TF Serving's layout, each naming the stand-in and the copied source.

TF Serving (absl/TF logging) prints `2026-01-01 12:00:00.123456: I
tensorflow_serving/model_servers/server.cc:NNN] message`; the stand-in prints
`2026-01-01 12:00:00.123456: I tfserving-standin server.cc] message`: same message texts (so
what one greps for in TF Serving's logs is found here), a different, honest origin.
"""

from __future__ import annotations

import datetime
import sys
import threading

from testing.tfserving_standin import STANDIN_NAME

_lock = threading.Lock()


def _emit(severity: str, source: str, message: str) -> None:
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")
    line = f"{now}: {severity} {STANDIN_NAME} {source}] {message}\n"
    with _lock:
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


def info(source: str, message: str) -> None:
    _emit("I", source, message)


def warning(source: str, message: str) -> None:
    _emit("W", source, message)


def error(source: str, message: str) -> None:
    _emit("E", source, message)
