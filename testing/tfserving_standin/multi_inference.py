"""PredictionService/MultiInference: classification and regression tasks over one input.

- tensorflow_serving/servables/tensorflow/multi_inference_helper.cc
  RunMultiInferenceWithServerCore(): the servable handle comes from the FIRST task's model_spec
  (an empty ModelSpec when there is no task, so ServerCore answers "ModelSpec has no name
  specified."), then RunMultiInference() on that version's session.
- tensorflow_serving/servables/tensorflow/multi_inference.cc
  TensorFlowMultiInferenceRunner::Infer(): every task names the same model, a signature once,
  a signature that exists, and the method "tensorflow/serving/classify" or
  "tensorflow/serving/regress" (checked by classifier.cc PreProcessClassification() and
  regressor.cc PreProcessRegression(), bundle.py here). The input is serialized once
  (util.cc InputToSerializedExampleTensor(): "Input is empty.") and fed to every distinct
  input tensor; the distinct output tensors, in std::set (sorted) order, are fetched in ONE
  Session::Run (util.cc PerformOneShotTensorComputation(), the std::set overload, which
  records no runtime_latency). Each task's result is then post-processed in request order
  (PostProcessClassificationResult / PostProcessRegressionResult) and carries MakeModelSpec()
  (empty signature name -> "serving_default", the servable's version).
- Metrics: Infer() records RecordRequestExampleCount() (util.cc: request_example_counts and
  request_example_count_total, label "model"), and nothing else. prediction_service_impl.cc
  MultiInference() (and tfrt_prediction_service_impl.cc) records NEITHER request_count NOR
  request_latency, unlike Predict/Classify/Regress: a MultiInference call is invisible to
  :tensorflow:serving:request_count on real TF Serving, and so it is here.
- Warmup: saved_model_warmup.cc RunWarmupRequest() runs a multi_inference_log record through
  the same RunMultiInference() without a version.
- There is no REST route for it (http_rest_api_handler.cc serves classify, regress, predict).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from testing.tfserving_standin import bundle as bundles
from testing.tfserving_standin import metrics
from testing.tfserving_standin.status import Code, error

if TYPE_CHECKING:
    from testing.tfserving_standin.server_core import ServerCore


def run_with_server_core(core: ServerCore, request: Any, timeout_ms: int | None) -> Any:
    """multi_inference_helper.cc RunMultiInferenceWithServerCore()."""
    from tensorflow_serving.apis import model_pb2

    if request.tasks and request.tasks[0].HasField("model_spec"):
        model_spec = request.tasks[0].model_spec
    else:
        model_spec = model_pb2.ModelSpec()  # ModelSpec::default_instance()
    with core.servable_handle(model_spec) as handle:
        return run(handle.bundle, request, handle.id.version, timeout_ms)


def run(bundle: bundles.Bundle, request: Any, version: int | None, timeout_ms: int | None) -> Any:
    """multi_inference.cc RunMultiInference() / TensorFlowMultiInferenceRunner::Infer()."""
    from tensorflow_serving.apis import inference_pb2

    check = bundle.options.method_name_check
    model_name = ""
    signature_names: set[str] = set()
    input_names: set[str] = set()
    output_name_set: set[str] = set()
    for task in request.tasks:
        if not task.model_spec.name:
            raise error(Code.INVALID_ARGUMENT, "Found ModelSpec with an empty model name.")
        if not model_name:
            model_name = task.model_spec.name
        elif model_name != task.model_spec.name:
            raise error(
                Code.INVALID_ARGUMENT,
                "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
            )
        signature_name = task.model_spec.signature_name or bundles.DEFAULT_SIGNATURE
        if signature_name in signature_names:
            raise error(
                Code.INVALID_ARGUMENT, "Duplicate evaluation of signature: ", signature_name
            )
        signature_names.add(signature_name)
        if signature_name not in bundle.signatures:
            raise error(
                Code.INVALID_ARGUMENT,
                "Requested signature not found in model graph: ",
                signature_name,
            )
        signature = bundle.signatures[signature_name]
        if task.method_name == bundles.CLASSIFY_METHOD:
            input_name, task_outputs = bundles.preprocess_classification(signature, check)
        elif task.method_name == bundles.REGRESS_METHOD:
            input_name, task_outputs = bundles.preprocess_regression(signature, check)
        else:
            raise error(Code.UNIMPLEMENTED, "Unsupported signature method_name: ", task.method_name)
        input_names.add(input_name)
        output_name_set.update(task_outputs)

    output_names = sorted(output_name_set)  # std::vector from a std::set<std::string>
    # PerformOneShotTensorComputation(): the examples first ("Input is empty."), then one Run.
    examples = bundles.serialized_examples(request.input)
    feeds = [(name, examples) for name in sorted(input_names)]
    outputs = bundle.run(feeds, output_names, timeout_ms)
    num_examples = len(examples)
    # RecordRequestExampleCount(model_name, num_examples)
    metrics.request_example_counts.add(num_examples, model_name)
    metrics.request_example_count_total.inc(model_name, by=num_examples)

    response = inference_pb2.MultiInferenceResponse()
    for task in request.tasks:
        signature_name = task.model_spec.signature_name or bundles.DEFAULT_SIGNATURE
        signature = bundle.signatures[signature_name]
        result = response.results.add()
        if task.method_name == bundles.CLASSIFY_METHOD:
            bundles.postprocess_classification(
                signature, num_examples, output_names, outputs, result.classification_result
            )
        else:
            bundles.postprocess_regression(
                signature, num_examples, output_names, outputs, result.regression_result
            )
        bundles.make_model_spec(
            result.model_spec, task.model_spec.name, task.model_spec.signature_name, version
        )
    return response
