"""assets.extra/tf_serving_warmup_requests: PredictionLog records TF Serving replays on load."""

from __future__ import annotations

from pathlib import Path

from servedmodel_exporter.samples import Batch

MAX_RECORDS = 1000  # TF Serving reads at most this many warmup records
FILE = Path("assets.extra") / "tf_serving_warmup_requests"


def write(saved_model_dir: Path, model_name: str, batches: list[Batch], records: int) -> int:
    """Write `records` single-example Predict requests, cycling through the batches.

    Returns how many were written."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    records = min(records, MAX_RECORDS)
    examples = [(b, i) for b in batches for i in range(len(next(iter(b.values()))))]
    if records <= 0 or not examples:
        return 0
    path = saved_model_dir / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for n in range(records):
            batch, index = examples[n % len(examples)]
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name="serving_default")
            )
            for name, values in batch.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(values[index : index + 1]))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return records
