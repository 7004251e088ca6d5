"""absl::Status as TF Serving reports it: codes, ToString(), and the HTTP and gRPC mappings."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Code(enum.IntEnum):
    """absl::StatusCode (= tensorflow.error.Code, = grpc status codes)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


@dataclass(frozen=True)
class Status:
    code: Code = Code.OK
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code == Code.OK

    def to_string(self) -> str:
        """absl::Status::ToString(): "OK" or "<CODE_NAME>: <message>"."""
        return "OK" if self.ok else f"{self.code.name}: {self.message}"

    def __str__(self) -> str:
        return self.to_string()


OK = Status()


class StatusError(Exception):
    """A non-OK Status travelling as an exception (TF_RETURN_IF_ERROR)."""

    def __init__(self, status: Status) -> None:
        super().__init__(status.to_string())
        self.status = status


def error(code: Code, *parts: object) -> StatusError:
    """errors::InvalidArgument(a, b, ...) and friends: the parts are StrCat'ed."""
    return StatusError(Status(code, "".join(str(p) for p in parts)))


# tensorflow_serving/model_servers/http_server.cc ToHTTPStatusCode().
_HTTP = {
    Code.OK: 200,
    Code.CANCELLED: 499,  # CLIENT_CLOSED_REQUEST
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


def http_status(status: Status) -> int:
    return _HTTP.get(status.code, 500)


def grpc_message(status: Status) -> str:
    """tensorflow_serving/model_servers/grpc_status_util.cc ToGRPCStatus(): 1024 chars at most."""
    limit = 1024
    if len(status.message) > limit:
        return status.message[:limit] + "...TRUNCATED"
    return status.message


def from_exception(exc: BaseException) -> Status:
    """A TensorFlow error keeps its own code and message (what the C++ runtime returns)."""
    if isinstance(exc, StatusError):
        return exc.status
    code = getattr(exc, "error_code", None)
    message = getattr(exc, "message", None)
    if isinstance(code, int) and isinstance(message, str) and 0 < code <= 16:
        return Status(Code(code), message)
    return Status(Code.UNKNOWN, f"{type(exc).__name__}: {exc}")
