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


class InvalidSamples(ExportError):
    """--samples-file cannot feed the signature: missing inputs, wrong shapes, not an .npz."""

    exit_code = 19
    reason = "InvalidSamples"
    permanent = True


class UnsupportedSignature(ExportError):
    """The model's inputs or outputs cannot be served or verified as they are: nested outputs,
    or an input dtype the exporter cannot generate values for (--samples-file can)."""

    exit_code = 20
    reason = "UnsupportedSignature"
    permanent = True


class NoServingSignature(ExportError):
    """A SavedModel without a 'serve' MetaGraph or without a serving_default signature."""

    exit_code = 21
    reason = "NoServingSignature"
    permanent = True


class UnsafeModel(ExportError):
    """Loading would run code stored in the model (a Lambda's Python bytecode), or the source
    holds a symlink or special file."""

    exit_code = 22
    reason = "UnsafeModel"
    permanent = True


class SourceTooLarge(ExportError):
    """The source is larger than --max-source-bytes (checked while it streams)."""

    exit_code = 23
    reason = "SourceTooLarge"
    permanent = True


class StoreConflict(ExportError):
    """The version exists but belongs to another ServedModel (owner UID), or its files no
    longer match its record: it is never touched."""

    exit_code = 24
    reason = "StoreConflict"
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
    InvalidSamples,
    UnsupportedSignature,
    NoServingSignature,
    UnsafeModel,
    SourceTooLarge,
    StoreConflict,
    InternalError,
)
PERMANENT_EXIT_CODES = tuple(sorted(e.exit_code for e in ALL_ERRORS if e.permanent))
