"""TF Serving's MonitoringConfig and BatchingParameters, which tensorflow-serving-api does not ship.

Declared here with TF Serving's own package, message, field names and numbers
(tensorflow_serving/config/monitoring_config.proto and the BatchingParameters message of
tensorflow_serving/servables/tensorflow/session_bundle_config.proto, all nine fields), so a text
file is accepted or refused exactly as tensorflow_model_server's text-format parser would. The
operator declares a subset of the same message (operator/servedmodel_operator/render/protos.py:
it never writes thread_pool_name, enable_large_batch_splitting or max_execution_batch_size);
what it renders parses here. The stand-in does not import the operator.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

from testing.tfserving_standin import logs
from testing.tfserving_standin.status import Code, error

_PACKAGE = "tensorflow.serving"
_F = descriptor_pb2.FieldDescriptorProto


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="tfserving_standin/tensorflow_serving_configs.proto",
        package=_PACKAGE,
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=_F.TYPE_BOOL, label=_F.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        type=_F.TYPE_MESSAGE,
        label=_F.LABEL_OPTIONAL,
        type_name=f".{_PACKAGE}.PrometheusConfig",
    )
    batching = proto.message_type.add(name="BatchingParameters")
    wrapped = (
        ("max_batch_size", 1, "Int64Value"),
        ("batch_timeout_micros", 2, "Int64Value"),
        ("max_enqueued_batches", 3, "Int64Value"),
        ("num_batch_threads", 4, "Int64Value"),
        ("thread_pool_name", 5, "StringValue"),
        ("enable_large_batch_splitting", 8, "BoolValue"),
        ("max_execution_batch_size", 9, "Int64Value"),
    )
    for name, number, wrapper in wrapped:
        batching.field.add(
            name=name,
            number=number,
            type=_F.TYPE_MESSAGE,
            label=_F.LABEL_OPTIONAL,
            type_name=f".google.protobuf.{wrapper}",
        )
    batching.field.add(
        name="allowed_batch_sizes", number=6, type=_F.TYPE_INT64, label=_F.LABEL_REPEATED
    )
    batching.field.add(
        name="pad_variable_length_inputs", number=7, type=_F.TYPE_BOOL, label=_F.LABEL_OPTIONAL
    )
    return proto


_pool = descriptor_pool.DescriptorPool()
_pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
_pool.Add(_file())

MonitoringConfig: Any = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName(f"{_PACKAGE}.MonitoringConfig")
)
BatchingParameters: Any = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName(f"{_PACKAGE}.BatchingParameters")
)


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
