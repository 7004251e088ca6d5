"""Every way an export can fail, each with its own exit code and CamelCase reason.

Imports nothing heavy: the CLI reports source and checksum errors before TensorFlow loads.
The operator keeps its own copy of PERMANENT_EXIT_CODES (it must not import this package);
a unit test holds the two equal.
"""

from __future__ import annotations

from typing import Any


class ExportError(Exception):
    """An export failure with a reason the operator shows in the ServedModel's status."""

    exit_code = 1
    reason = "ExportFailed"
    permanent = False  # True: retrying the same Job cannot succeed

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())  # one line, always
        self.details = details or {}  # extra result fields, e.g. the verification figures


class SourceUnreachable(ExportError):
    exit_code = 10
    reason = "SourceUnreachable"


class SourceNotFound(ExportError):
    exit_code = 11
    reason = "SourceNotFound"
    permanent = True


class ChecksumMismatch(ExportError):
    exit_code = 12
    reason = "ChecksumMismatch"
    permanent = True


class NotAKerasModel(ExportError):
    exit_code = 13
    reason = "NotAKerasModel"
    permanent = True


class UnknownCustomObject(ExportError):
    exit_code = 14
    reason = "UnknownCustomObject"
    permanent = True


class VerificationMismatch(ExportError):
    exit_code = 15
    reason = "VerificationMismatch"
    permanent = True


class VersionExists(ExportError):
    exit_code = 16
    reason = "VersionExists"
    permanent = True


class StoreNotWritable(ExportError):
    exit_code = 17
    reason = "StoreNotWritable"


class AccessDenied(ExportError):
    exit_code = 18
    reason = "AccessDenied"
    permanent = True


class InternalError(ExportError):
    exit_code = 1
    reason = "InternalError"


ALL_ERRORS: tuple[type[ExportError], ...] = (
    SourceUnreachable,
    SourceNotFound,
    ChecksumMismatch,
    NotAKerasModel,
    UnknownCustomObject,
    VerificationMismatch,
    VersionExists,
    StoreNotWritable,
    AccessDenied,
    InternalError,
)
PERMANENT_EXIT_CODES = tuple(sorted(e.exit_code for e in ALL_ERRORS if e.permanent))
