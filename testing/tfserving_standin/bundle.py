"""A loaded SavedModel version and what runs on it: Predict, Classify, Regress, warmup.

TF Serving loads a version with TensorFlow's C++ LoadSavedModel into a Session (a
SavedModelBundle: tensorflow_serving/servables/tensorflow/saved_model_bundle_factory.cc) and
runs requests by feeding and fetching the signature's tensor names. The stand-in does the same
with TensorFlow's Python SavedModel loader for sessions (tf.compat.v1.saved_model.loader.load)
and runs them with Session::Run and RunOptions through TF's C API (TF_SessionRun), as
predict_util.cc, classifier.cc and regressor.cc call session->Run(run_options, ...), so the
numbers, the runtime's error messages (shape and dtype mismatches) and run timeouts are
TensorFlow's own.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from testing.tfserving_standin import batching as batchings
from testing.tfserving_standin import logs, metrics, tensors
from testing.tfserving_standin.shares import Shares
from testing.tfserving_standin.status import Code, Status, StatusError, error, from_exception

DEFAULT_SIGNATURE = "serving_default"  # kDefaultServingSignatureDefKey
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
WARMUP_FILE = "tf_serving_warmup_requests"  # saved_model_warmup_util.h kRequestsFileName
WARMUP_MAX_RECORDS = 1000  # saved_model_warmup_util.h kMaxNumRecords
BATCH_SIZE_LIMIT_DEFAULT = batchings.INPUT_BATCH_SIZE_LIMIT_DEFAULT
# A stand-in test knob, not a TF Serving setting: every client inference (Predict, Classify,
# Regress; not warmup) takes this much longer inside its session run, as a slow model would.
# The run timeout (REST --rest_api_timeout_in_ms, a gRPC deadline) counts it: a run that
# would outlast its timeout ends at the timeout with DirectSession's DEADLINE_EXCEEDED.
PREDICT_DELAY_ENV = "STANDIN_PREDICT_DELAY_MS"
# tensorflow/core/common_runtime/direct_session.cc WaitForNotification() on a run timeout.
RUN_TIMEOUT_MESSAGE = "Timed out waiting for notification"
_warmup = threading.local()  # set while warmup replays: the predict delay is for clients only


@dataclass(frozen=True)
class LoadOptions:
    tags: tuple[str, ...]
    enable_warmup: bool
    warmup_iterations: int
    batching: Any | None  # BatchingParameters when --enable_batching
    session_config: Any | None  # tf ConfigProto
    method_name_check: bool
    tensor_content: bool
    # With --enable_batching: the server's one SharedBatchScheduler (batching.py).
    batch_scheduler: batchings.BatchScheduler | None = None


def predict_delay_s() -> float:
    """STANDIN_PREDICT_DELAY_MS, in seconds (0: none)."""
    try:
        return max(0.0, float(os.environ.get(PREDICT_DELAY_ENV) or 0) / 1000)
    except ValueError:
        return 0.0


def _now_us() -> int:
    return time.monotonic_ns() // 1000


class Bundle:
    def __init__(
        self,
        export_dir: str,
        meta_graph_def: Any,
        session: Any,
        options: LoadOptions,
        queue_options: batchings.QueueOptions | None = None,
    ):
        self.export_dir = export_dir
        self.meta_graph_def = meta_graph_def
        self.signatures = meta_graph_def.signature_def
        self.session = session
        self.options = options
        self._lock = threading.Lock()
        self._users = Shares()
        self._queues: dict[tuple[tuple[str, ...], tuple[str, ...]], batchings.Queue] = {}
        self._queue_options = queue_options  # None: no batching

    def acquire(self) -> None:
        """A ServableHandle taken: unloading waits until every handle is released."""
        self._users.take()

    def release(self) -> None:
        self._users.drop()

    def run(
        self,
        feeds: Sequence[tuple[str, np.ndarray]],
        fetches: Sequence[str],
        timeout_ms: int | None,
    ) -> list[np.ndarray]:
        """Session::Run(run_options, ...), as predict_util.cc / classifier.cc / regressor.cc
        call it; through the BatchingSession's queue with --enable_batching (batching.py)."""
        scheduler = self.options.batch_scheduler
        if scheduler is None or self._queue_options is None:
            return self._session_run(feeds, fetches, timeout_ms)
        # BatchingSession::InternalRun(): the task's size, its signature's queue, Schedule().
        size = batchings.task_size(list(feeds))
        key = (tuple(sorted(n for n, _ in feeds)), tuple(sorted(fetches)))
        with self._lock:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = scheduler.add_queue(self._queue_options)
        task = queue.schedule(size, timeout_ms)
        try:
            run_timeout = task.wait()
            return self._session_run(feeds, fetches, run_timeout)
        finally:
            task.done()

    def _session_run(
        self,
        feeds: Sequence[tuple[str, np.ndarray]],
        fetches: Sequence[str],
        timeout_ms: int | None,
    ) -> list[np.ndarray]:
        """Session::Run(run_options, inputs, output_tensor_names, {}, &outputs) through TF's C
        API (TF_SessionRun, DirectSession::Run: the runtime's own errors, no Python-side shape
        checks): a RunOptions timeout <= 0 means none; a run that outlasts its timeout is
        cancelled with DEADLINE_EXCEEDED "Timed out waiting for notification"."""
        from tensorflow.core.protobuf import config_pb2
        from tensorflow.python.client import pywrap_tf_session as tf_session

        timeout = timeout_ms if timeout_ms is not None and timeout_ms > 0 else 0
        delay = 0.0 if getattr(_warmup, "active", False) else predict_delay_s()
        if delay > 0:  # STANDIN_PREDICT_DELAY_MS: a slower graph
            if timeout and delay * 1000 >= timeout:
                time.sleep(timeout / 1000)
                raise error(Code.DEADLINE_EXCEEDED, RUN_TIMEOUT_MESSAGE)
            time.sleep(delay)
            if timeout:
                timeout = max(1, timeout - int(delay * 1000))
        graph = self.session.graph
        options = tf_session.TF_NewBufferFromString(
            config_pb2.RunOptions(timeout_in_ms=timeout).SerializeToString()
        )
        try:
            outputs = self.session._call_tf_sessionrun(
                options,
                {graph.get_tensor_by_name(name)._as_tf_output(): value for name, value in feeds},
                [graph.get_tensor_by_name(name)._as_tf_output() for name in fetches],
                [],
                None,
            )
            return [np.asarray(x) for x in outputs]
        except Exception as exc:
            raise StatusError(from_exception(exc)) from None
        finally:
            tf_session.TF_DeleteBuffer(options)

    def close(self) -> None:
        # BasicManager::UpdateServingMap() blocks until the last handle is freed; then unload.
        self._users.wait_none()
        with self._lock:
            queues, self._queues = list(self._queues.values()), {}
        if self.options.batch_scheduler is not None:
            for queue in queues:
                self.options.batch_scheduler.remove_queue(queue)
        self.session.close()


# --- loading -----------------------------------------------------------------------------------


def _read_meta_graph(export_dir: str, local_dir: str, tags: tuple[str, ...]) -> Any:
    """tensorflow/cc/saved_model/reader.cc ReadSavedModel() + FindMetaGraphDef()."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    logs.info("reader.cc", f"Reading SavedModel from: {export_dir}")
    pb = os.path.join(local_dir, "saved_model.pb")
    pbtxt = os.path.join(local_dir, "saved_model.pbtxt")
    saved_model = saved_model_pb2.SavedModel()
    if os.path.exists(pb):
        try:
            with open(pb, "rb") as f:
                saved_model.ParseFromString(f.read())
        except Exception:
            raise error(
                Code.DATA_LOSS, "Can't parse ", export_dir, "/saved_model.pb as binary proto"
            ) from None
    elif os.path.exists(pbtxt):
        try:
            with open(pbtxt, encoding="utf-8", errors="surrogateescape") as f:
                text_format.Parse(f.read(), saved_model)
        except Exception:
            raise error(
                Code.DATA_LOSS, "Can't parse ", export_dir, "/saved_model.pbtxt as text proto"
            ) from None
    else:
        raise error(
            Code.NOT_FOUND,
            "Could not find SavedModel .pb or .pbtxt at supplied export directory path: ",
            export_dir,
            ". Check that the directory exists and that you have the right permissions for "
            "accessing it.",
        )
    logs.info("reader.cc", f"Reading meta graph with tags {{ {' '.join(tags)} }}")
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == set(tags):
            return meta_graph
    raise error(
        Code.NOT_FOUND,
        "Could not find meta graph def matching supplied tags: { ",
        " ".join(tags),
        " }. To inspect available tag-sets in the SavedModel, please use the SavedModel CLI: "
        "`saved_model_cli`",
    )


def _validate_batching(batching: Any) -> batchings.QueueOptions:
    """tensorflow_serving/servables/tensorflow/bundle_factory_util.cc WrapSessionForBatching(),
    then the queue's options as GetQueueOptions() and SharedBatchScheduler::AddQueue() check
    them."""
    logs.info("bundle_factory_util.cc", "Wrapping session to perform batch processing")
    allowed = list(batching.allowed_batch_sizes)
    if allowed:
        last = allowed[-1]
        maximum = (
            batching.max_batch_size.value
            if batching.HasField("max_batch_size")
            else BATCH_SIZE_LIMIT_DEFAULT
        )
        if last != maximum:
            raise error(
                Code.INVALID_ARGUMENT,
                "Last entry in allowed_batch_sizes must match max_batch_size; last entry was ",
                last,
                "; expected ",
                maximum,
            )
    return batchings.QueueOptions.from_parameters(batching)


def load(export_dir: str, local_dir: str, options: LoadOptions) -> Bundle:
    """SavedModelBundleFactory::CreateSavedModelBundle(), then RunSavedModelWarmup().

    LoadSavedModel's log line and its load_attempt_count / load_latency metrics follow
    tensorflow/cc/saved_model/loader.cc; warmup follows saved_model_bundle_source_adapter.cc
    (it runs inside the load, so the version is LOADING while warmup replays).
    """
    import tensorflow as tf

    start = _now_us()
    tags = options.tags or ("serve",)
    session = None
    try:
        meta_graph = _read_meta_graph(export_dir, local_dir, tags)
        graph = tf.Graph()
        session = tf.compat.v1.Session(graph=graph, config=options.session_config)
        logs.info("loader.cc", "Restoring SavedModel bundle.")
        try:
            loaded = tf.compat.v1.saved_model.loader.load(session, list(tags), local_dir)
        except Exception as exc:
            raise StatusError(from_exception(exc)) from None
        # remove_unused_fields_from_bundle_metagraph: only signature_def is kept.
        meta_graph = type(meta_graph)()
        meta_graph.signature_def.MergeFrom(loaded.signature_def)
    except StatusError as exc:
        took = _now_us() - start
        logs.info(
            "loader.cc",
            f"SavedModel load for tags {{ {' '.join(tags)} }}; Status: fail: "
            f"{exc.status.to_string()}. Took {took} microseconds.",
        )
        metrics.load_attempt_count.inc(export_dir, "fail")
        if session is not None:
            session.close()
        raise
    took = _now_us() - start
    logs.info(
        "loader.cc",
        f"SavedModel load for tags {{ {' '.join(tags)} }}; Status: success: OK. "
        f"Took {took} microseconds.",
    )
    metrics.load_attempt_count.inc(export_dir, "success")
    metrics.load_latency.inc(export_dir, by=took)
    try:
        queue_options = _validate_batching(options.batching) if options.batching else None
    except StatusError:
        session.close()
        raise
    bundle = Bundle(export_dir, meta_graph, session, options, queue_options)
    try:
        if options.enable_warmup:
            run_warmup(bundle, local_dir, options)
    except StatusError:
        bundle.close()
        raise
    return bundle


# --- warmup ------------------------------------------------------------------------------------


def run_warmup(bundle: Bundle, local_dir: str, options: LoadOptions) -> None:
    """saved_model_warmup_util.cc RunSavedModelWarmupUntracked() with saved_model_warmup.cc's
    RunWarmupRequest(): every PredictionLog in assets.extra/tf_serving_warmup_requests is run
    (num_request_iterations times) before the version becomes AVAILABLE."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    start = _now_us()
    warmup_path = f"{bundle.export_dir}/assets.extra/{WARMUP_FILE}"
    local_path = os.path.join(local_dir, "assets.extra", WARMUP_FILE)
    if not os.path.exists(local_path):
        logs.info("saved_model_warmup_util.cc", f"No warmup data file found at {warmup_path}")
        return
    iterations = options.warmup_iterations if options.warmup_iterations > 0 else 1
    logs.info(
        "saved_model_warmup_util.cc",
        f"Starting to read warmup data for model at {warmup_path} with model-warmup-options ",
    )
    count = 0
    status = Status()
    _warmup.active = True
    try:
        for record in tf.compat.v1.io.tf_record_iterator(local_path):
            log = prediction_log_pb2.PredictionLog()
            try:
                log.ParseFromString(record)
            except Exception:
                raise error(
                    Code.INVALID_ARGUMENT,
                    "Failed to parse warmup record: ",
                    record.decode("utf-8", errors="replace"),
                    " from ",
                    warmup_path,
                ) from None
            for _ in range(iterations):
                _run_warmup_request(bundle, log)
            count += 1
            if count > WARMUP_MAX_RECORDS:
                raise error(
                    Code.INVALID_ARGUMENT,
                    f"Number of warmup records exceeds the maximum ({WARMUP_MAX_RECORDS}) at ",
                    warmup_path,
                )
    except StatusError as exc:
        status = exc.status
    except Exception as exc:
        status = from_exception(exc)
    finally:
        _warmup.active = False
    latency = _now_us() - start
    metrics.model_warmup_latency.add(latency, bundle.export_dir, status.to_string())
    metrics.model_warmup_records_read.inc(bundle.export_dir, status.to_string(), by=count)
    if status.code == Code.DATA_LOSS:
        raise StatusError(
            Status(
                Code.DATA_LOSS,
                status.message + ". Please verify your warmup data is in TFRecord format.",
            )
        )
    if not status.ok:
        raise StatusError(status)
    logs.info(
        "saved_model_warmup_util.cc",
        f"Finished reading warmup data for model at {warmup_path}. Number of warmup records "
        f"read: {count}. Elapsed time (microseconds): {latency}.",
    )


def _run_warmup_request(bundle: Bundle, log: Any) -> None:
    """saved_model_warmup.cc RunWarmupRequest()."""
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        request = log.predict_log.request
        inputs = dict(request.inputs.items())
        run_predict(
            bundle,
            request.model_spec.name,
            request.model_spec.signature_name,
            inputs,
            list(request.output_filter),
            None,
            None,
        )
    elif kind == "classify_log":
        run_classify(bundle, log.classify_log.request, None, None)
    elif kind == "regress_log":
        run_regress(bundle, log.regress_log.request, None, None)
    elif kind == "multi_inference_log":
        from testing.tfserving_standin import multi_inference

        multi_inference.run(bundle, log.multi_inference_log.request, None, None)
    elif kind is not None:
        number = log.DESCRIPTOR.fields_by_name[kind].number
        raise error(Code.UNIMPLEMENTED, "Unsupported log_type for warmup: ", number)


# --- predict -----------------------------------------------------------------------------------


def _keys(mapping: Any) -> list[str]:
    return sorted(mapping.keys())


def run_predict(
    bundle: Bundle,
    model_name: str,
    signature_name: str,
    inputs: dict[str, Any],
    output_filter: list[str],
    version: int | None,
    timeout_ms: int | None,
) -> tuple[str, list[tuple[str, np.ndarray]]]:
    """tensorflow_serving/servables/tensorflow/predict_util.cc RunPredict().

    `inputs` values are numpy arrays (REST: json_tensor.cc built them) or TensorProtos (gRPC,
    warmup). Returns the resolved signature name and the outputs by alias.
    """
    name = signature_name or DEFAULT_SIGNATURE
    if name not in bundle.signatures:
        raise error(Code.FAILED_PRECONDITION, 'Serving signature key "', name, '" not found.')
    signature = bundle.signatures[name]
    # PreProcessPrediction(): VerifySignature() only with --enable_signature_method_name_check.
    if bundle.options.method_name_check and signature.method_name not in (
        PREDICT_METHOD,
        CLASSIFY_METHOD,
        REGRESS_METHOD,
    ):
        raise error(
            Code.INTERNAL,
            "Expected prediction signature method_name to be one of {",
            f"{PREDICT_METHOD}, {CLASSIFY_METHOD}, {REGRESS_METHOD}",
            "}. Was: ",
            signature.method_name,
        )
    _verify_inputs_size(signature, inputs)
    feeds = _input_values(signature, inputs)
    aliases: list[str] = []
    fetches: list[str] = []
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise error(
                Code.INVALID_ARGUMENT,
                "output tensor alias not found in signature: ",
                alias,
                " Outputs expected to be in the set {",
                ",".join(_keys(signature.outputs)),
                "}.",
            )
        if alias in seen:
            raise error(Code.INVALID_ARGUMENT, "duplicate output tensor alias: " + alias)
        seen.add(alias)
        aliases.append(alias)
        fetches.append(signature.outputs[alias].name)
    if not fetches:
        for alias in _keys(signature.outputs):
            aliases.append(alias)
            fetches.append(signature.outputs[alias].name)
    start = _now_us()
    outputs = bundle.run(feeds, fetches, timeout_ms)
    metrics.runtime_latency.add(_now_us() - start, model_name, "Predict", "TF1")
    if len(outputs) != len(aliases):
        raise error(Code.UNKNOWN, "Predict internal error")
    return name, list(zip(aliases, outputs, strict=True))


def _verify_inputs_size(signature: Any, inputs: dict[str, Any]) -> None:
    """predict_util.cc VerifyRequestInputsSize()."""
    n_req, n_sig = len(inputs), len(signature.inputs)
    if n_req > n_sig or (n_req < n_sig and len(signature.defaults) == 0):
        request_inputs = sorted(inputs)
        signature_inputs = _keys(signature.inputs)
        extra = sorted(set(request_inputs) - set(signature_inputs))
        missing = sorted(set(signature_inputs) - set(request_inputs))
        raise error(
            Code.INVALID_ARGUMENT,
            f"input size does not match signature: {n_req}!={n_sig} len({{",
            ",".join(request_inputs),
            "}) != len({",
            ",".join(signature_inputs),
            "}). Sent extra: {",
            ",".join(extra),
            "}. Missing but required: {",
            ",".join(missing),
            "}.",
        )


def _input_values(signature: Any, inputs: dict[str, Any]) -> list[tuple[str, np.ndarray]]:
    """tensorflow/cc/saved_model/util.cc GetInputValues()."""
    feeds: list[tuple[str, np.ndarray]] = []
    seen: set[str] = set()
    for alias in _keys(signature.inputs):
        feed_name = signature.inputs[alias].name
        if alias in inputs:
            value = inputs[alias]
            seen.add(alias)
        elif alias in signature.defaults:
            value = signature.defaults[alias]
        else:
            raise error(
                Code.INVALID_ARGUMENT,
                "Signature input alias: ",
                alias,
                "(feed name: ",
                feed_name,
                ") not found in request and no default value provided. Inputs expected to be "
                "in the request {",
                ",".join(sorted(inputs)),
                "}, or default input alias set: ",
                ",".join(_keys(signature.defaults)),
            )
        if not isinstance(value, np.ndarray):
            try:
                value = tensors.from_proto(value)
            except Exception:
                raise error(Code.INVALID_ARGUMENT, "tensor parsing error: ", alias) from None
        feeds.append((feed_name, value))
    if inputs and len(seen) != len(inputs):
        raise error(
            Code.INVALID_ARGUMENT,
            "Inputs contains invalid name. Used request inputs: ",
            ",".join(sorted(seen)),
            ", request input: ",
            ",".join(sorted(inputs)),
        )
    return feeds


# --- classify / regress ------------------------------------------------------------------------


def _signature_for(bundle: Bundle, signature_name: str) -> Any:
    name = signature_name or DEFAULT_SIGNATURE
    if name not in bundle.signatures:
        raise error(Code.INVALID_ARGUMENT, "No signature was found with the name: ", name)
    return bundle.signatures[name]


def _debug_string(message: Any) -> str:
    from google.protobuf import text_format

    return str(text_format.MessageToString(message))


def serialized_examples(request_input: Any) -> np.ndarray:
    """tensorflow_serving/servables/tensorflow/util.cc InputToSerializedExampleTensor()."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        ctx = request_input.example_list_with_context.context.SerializeToString()
        examples = [
            ctx + e.SerializeToString() for e in request_input.example_list_with_context.examples
        ]
    else:
        examples = []
    if not examples:
        raise error(Code.INVALID_ARGUMENT, "Input is empty.")
    return np.array(examples, dtype=object)


def preprocess_classification(signature: Any, method_name_check: bool) -> tuple[str, list[str]]:
    """classifier.cc PreProcessClassification(): (input tensor name, output tensor names)."""
    if method_name_check and signature.method_name != CLASSIFY_METHOD:
        raise error(
            Code.INVALID_ARGUMENT,
            "Expected classification signature method_name to be ",
            CLASSIFY_METHOD,
            ". Was: ",
            signature.method_name,
        )
    if len(signature.inputs) != 1:
        raise error(Code.INVALID_ARGUMENT, "Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise error(
            Code.INVALID_ARGUMENT,
            "Expected one or two output Tensors, found ",
            len(signature.outputs),
        )
    if "inputs" not in signature.inputs:
        raise error(
            Code.INVALID_ARGUMENT,
            "No classification inputs found in SignatureDef: ",
            _debug_string(signature),
        )
    if "classes" not in signature.outputs and "scores" not in signature.outputs:
        raise error(
            Code.INVALID_ARGUMENT,
            'Expected classification signature outputs to contain at least one of "classes" '
            'or "scores". Signature was: ',
            _debug_string(signature),
        )
    keys = [key for key in ("classes", "scores") if key in signature.outputs]
    return signature.inputs["inputs"].name, [signature.outputs[key].name for key in keys]


def postprocess_classification(
    signature: Any,
    num_examples: int,
    output_names: Sequence[str],
    outputs: Sequence[np.ndarray],
    result: Any,
) -> None:
    """classifier.cc PostProcessClassificationResult(): fills a ClassificationResult."""
    if len(outputs) != len(output_names):
        raise error(
            Code.INVALID_ARGUMENT,
            f"Expected {len(output_names)} output tensor(s).  Got: {len(outputs)}",
        )
    classes_name = signature.outputs["classes"].name if "classes" in signature.outputs else ""
    scores_name = signature.outputs["scores"].name if "scores" in signature.outputs else ""
    classes: np.ndarray | None = None
    scores: np.ndarray | None = None
    for name, output in zip(output_names, outputs, strict=True):
        if name == classes_name:
            classes = output
        elif name == scores_name:
            scores = output
    for tensor, what, dtype in ((classes, "classes", "string"), (scores, "scores", "float")):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise error(
                Code.INVALID_ARGUMENT,
                "Expected Tensor shape: [batch_size num_classes] but got ",
                _shape_debug(tensor),
            )
        if tensors.dtype_string(tensors.tf_dtype_of(tensor)) != dtype:
            raise error(
                Code.INVALID_ARGUMENT,
                f"Expected {what} Tensor of DT_{dtype.upper()}. Got: ",
                "DT_" + tensors.dtype_string(tensors.tf_dtype_of(tensor)).upper(),
            )
        if tensor.shape[0] != num_examples:
            raise error(
                Code.INVALID_ARGUMENT,
                f"Expected {what} output batch size of {num_examples}. Got: {tensor.shape[0]}",
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise error(
            Code.INVALID_ARGUMENT,
            "Tensors class and score should match in dim_size(1). Got ",
            f"{classes.shape[1]} vs. {scores.shape[1]}",
        )
    present = classes if classes is not None else scores
    num_classes = present.shape[1] if present is not None else 0
    for i in range(num_examples):
        entry = result.classifications.add()
        for c in range(num_classes):
            cls = entry.classes.add()
            if classes is not None:
                cls.label = classes[i, c].decode("utf-8", errors="surrogateescape")
            if scores is not None:
                cls.score = float(scores[i, c])


def run_classify(bundle: Bundle, request: Any, version: int | None, timeout_ms: int | None) -> Any:
    """tensorflow_serving/servables/tensorflow/classifier.cc RunClassify()."""
    from tensorflow_serving.apis import classification_pb2

    return _run_on_examples(
        bundle,
        request,
        version,
        timeout_ms,
        "Classify",
        preprocess_classification,
        postprocess_classification,
        classification_pb2.ClassificationResponse(),
    )


def preprocess_regression(signature: Any, method_name_check: bool) -> tuple[str, list[str]]:
    """regressor.cc PreProcessRegression(): (input tensor name, [output tensor name])."""
    if method_name_check and signature.method_name != REGRESS_METHOD:
        raise error(
            Code.INVALID_ARGUMENT,
            "Expected regression signature method_name to be ",
            REGRESS_METHOD,
            ". Was: ",
            signature.method_name,
        )
    if len(signature.inputs) != 1:
        raise error(Code.INVALID_ARGUMENT, "Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise error(Code.INVALID_ARGUMENT, "Expected one output Tensor.")
    if "inputs" not in signature.inputs:
        raise error(
            Code.INVALID_ARGUMENT,
            "No regression inputs found in SignatureDef: ",
            _debug_string(signature),
        )
    if "outputs" not in signature.outputs:
        raise error(
            Code.INVALID_ARGUMENT,
            "No regression outputs found in SignatureDef: ",
            _debug_string(signature),
        )
    return signature.inputs["inputs"].name, [signature.outputs["outputs"].name]


def postprocess_regression(
    signature: Any,
    num_examples: int,
    output_names: Sequence[str],
    outputs: Sequence[np.ndarray],
    result: Any,
) -> None:
    """regressor.cc PostProcessRegressionResult(): fills a RegressionResult."""
    if len(outputs) != len(output_names):
        raise error(
            Code.INVALID_ARGUMENT,
            "Expected output_tensors and output_tensor_names to have the same size.",
        )
    if "outputs" not in signature.outputs:
        raise error(
            Code.FAILED_PRECONDITION,
            "No regression outputs found in SignatureDef: ",
            _debug_string(signature),
        )
    wanted = signature.outputs["outputs"].name
    output = next((t for n, t in zip(output_names, outputs, strict=True) if n == wanted), None)
    if output is None:
        raise error(Code.INVALID_ARGUMENT, f"Could not find output tensor '{wanted}'")
    if not (output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1)):
        raise error(
            Code.INVALID_ARGUMENT,
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got ",
            _shape_debug(output),
        )
    if num_examples != output.shape[0]:
        raise error(
            Code.INVALID_ARGUMENT,
            f"Input batch size did not match output batch size: {num_examples} vs. "
            f"{output.shape[0]}",
        )
    if output.dtype != np.float32:
        raise error(
            Code.INVALID_ARGUMENT,
            "Expected output Tensor of DT_FLOAT.  Got: DT_",
            tensors.dtype_string(tensors.tf_dtype_of(output)).upper(),
        )
    for value in output.reshape(-1):
        result.regressions.add().value = float(value)


def run_regress(bundle: Bundle, request: Any, version: int | None, timeout_ms: int | None) -> Any:
    """tensorflow_serving/servables/tensorflow/regressor.cc RunRegress()."""
    from tensorflow_serving.apis import regression_pb2

    return _run_on_examples(
        bundle,
        request,
        version,
        timeout_ms,
        "Regress",
        preprocess_regression,
        postprocess_regression,
        regression_pb2.RegressionResponse(),
    )


def _run_on_examples(
    bundle: Bundle,
    request: Any,
    version: int | None,
    timeout_ms: int | None,
    api: str,
    preprocess: Callable[[Any, bool], tuple[str, list[str]]],
    postprocess: Callable[[Any, int, Sequence[str], Sequence[np.ndarray], Any], None],
    response: Any,
) -> Any:
    """The steps RunClassify() (classifier.cc) and RunRegress() (regressor.cc) both take: the
    signature, its PreProcess*(), the serialized tf.Examples in, one run of the session (its
    runtime_latency recorded under `api`), MakeModelSpec() and PostProcess*Result() into
    response.result."""
    signature = _signature_for(bundle, request.model_spec.signature_name)
    input_name, output_names = preprocess(signature, bundle.options.method_name_check)
    examples = serialized_examples(request.input)
    start = _now_us()
    outputs = bundle.run([(input_name, examples)], output_names, timeout_ms)
    metrics.runtime_latency.add(_now_us() - start, request.model_spec.name, api, "TF1")
    spec = request.model_spec
    make_model_spec(response.model_spec, spec.name, spec.signature_name, version)
    postprocess(signature, len(examples), output_names, outputs, response.result)
    return response


def _shape_debug(array: np.ndarray) -> str:
    """TensorShape::DebugString(): [2,3]."""
    return "[" + ",".join(str(d) for d in array.shape) + "]"


def make_model_spec(out: Any, name: str, signature_name: str, version: int | None) -> None:
    """tensorflow_serving/servables/tensorflow/util.cc MakeModelSpec() (signature name given)."""
    out.Clear()
    out.name = name
    out.signature_name = signature_name or DEFAULT_SIGNATURE
    if version is not None:
        out.version.value = version
