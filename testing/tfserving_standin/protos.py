"""TF Serving's MonitoringConfig and BatchingParameters, and reading its text-format files.

tensorflow-serving-api does not ship those two messages. They are declared once, in the
operator's operator/servedmodel_operator/render/protos.py, with TF Serving's own package,
message, field names and numbers (tensorflow_serving/config/monitoring_config.proto and the
BatchingParameters message of tensorflow_serving/servables/tensorflow/session_bundle_config.proto,
all nine fields), so a text file is accepted or refused here exactly as tensorflow_model_server's
text-format parser would. The stand-in (test tooling) imports them from there; the operator
never imports the stand-in.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import text_format
from servedmodel_operator.render import protos as declared

from testing.tfserving_standin import logs
from testing.tfserving_standin.status import Code, error

# Any: the stand-in reads and sets their fields by name (the operator's type[Message] has none).
MonitoringConfig: Any = declared.MonitoringConfig
BatchingParameters: Any = declared.BatchingParameters


def read_file(container_path: str, local_path: str) -> bytes:
    """tensorflow::Env::NewReadOnlyMemoryRegionFromFile(): POSIX errors as TF reports them."""
    try:
        with open(local_path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise error(Code.NOT_FOUND, container_path, "; No such file or directory") from None
    except IsADirectoryError:
        raise error(Code.FAILED_PRECONDITION, container_path, "; Is a directory") from None
    except PermissionError:
        raise error(Code.PERMISSION_DENIED, container_path, "; Permission denied") from None
    except OSError as exc:
        raise error(Code.UNKNOWN, container_path, "; ", exc.strerror or str(exc)) from None


def parse_text_file(container_path: str, local_path: str, message: Any) -> None:
    """tensorflow_serving/util/proto_util.h ParseProtoTextFile(): "Invalid protobuf file: 'F'".

    The parser's own complaint goes to the log first, as C++ TextFormat's libprotobuf ERROR line.
    """
    data = read_file(container_path, local_path)
    try:
        text_format.Parse(data.decode("utf-8", errors="surrogateescape"), message)
    except (text_format.ParseError, UnicodeError) as exc:
        logs.error(
            "text_format.cc",
            f"Error parsing text-format {message.DESCRIPTOR.full_name}: {exc}",
        )
        raise error(
            Code.INVALID_ARGUMENT, "Invalid protobuf file: '", container_path, "'"
        ) from None
