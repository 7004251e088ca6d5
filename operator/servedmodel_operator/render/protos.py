"""TF Serving's monitoring and batching config messages, for text-format rendering.

tensorflow-serving-api ships the ModelServerConfig protos but not MonitoringConfig
(tensorflow_serving/config/monitoring_config.proto) nor BatchingParameters
(tensorflow_serving/servables/tensorflow/session_bundle_config.proto). These are declared
here with the same package, message, field names and numbers (BatchingParameters: all nine
fields, though the operator writes only six of them), so protobuf's text_format renders them
exactly as tensorflow_model_server parses them, and a misspelt field fails here, not in a pod.
The TF Serving stand-in (testing/tfserving_standin/protos.py) parses with these same messages.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2
from google.protobuf.message import Message

_PACKAGE = "tensorflow.serving"
_F = descriptor_pb2.FieldDescriptorProto


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="servedmodel/tensorflow_serving_configs.proto",
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

MonitoringConfig: type[Message] = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName(f"{_PACKAGE}.MonitoringConfig")
)
BatchingParameters: type[Message] = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName(f"{_PACKAGE}.BatchingParameters")
)
