"""TF Serving stand-in: a local stand-in for `tensorflow_model_server`, NOT TensorFlow Serving.

No registry ships `tensorflow_model_server`, so on the local (kwok-based) cluster this program
takes its place, the way kwok stands in for kubelets. It runs with exactly the command line the
operator renders for TF Serving (`python -m testing.tfserving_standin --port=8500 ...`) and
copies the behaviour a client or the operator can observe: the model config file and its
polling (ServerCore::ReloadConfig), version loading with the availability-preserving policy,
the REST and gRPC APIs with TF Serving's paths, JSON shapes, status codes and error texts, and
the Prometheus page. Every copied behaviour names the TF Serving source file it follows, in a
comment next to the code. Predictions are real: each version is loaded with TensorFlow's own
SavedModel loader into a TensorFlow session and run by signature tensor names, as TF Serving's
SavedModelBundle is.

It names itself a stand-in in its log lines, its --help and --version output and its HTTP
`Server` header.

Under load it behaves as TF Serving does: every REST request (predictions, httpGet probes,
status reads, scrapes) queues for one pool of --rest_api_num_threads threads (rest.py); a
gRPC client deadline and --rest_api_timeout_in_ms become the session run timeout
(DEADLINE_EXCEEDED; grpc_server.py, bundle.py); with --enable_batching the batch queue's
limits hold (an oversized request is refused, a full queue answers UNAVAILABLE;
batching.py); a newly loaded version is published AVAILABLE only once the requests in flight
on the previous serving map finished (manager.py).

Not copied: merging the requests of one batch into one session run (the queue and its limits
are copied, batching.py); TLS/ALTS, platform config files, TFLite, mixed precision,
thread-pool factories and the gRPC health service (those flags are refused at startup with an
UNIMPLEMENTED error naming the stand-in); the profiler service; resource estimation; request
logging; TensorFlow's own metrics beyond the few listed in metrics.py; libevent's HTTP
connection handling (Python's threading HTTP server reads and writes the connections; the
handlers run on the pool).

Environment (the contract with the local cluster's pod runner):
- STANDIN_POD_IP: the address both ports bind to (default 127.0.0.1); plays the pod's network
  namespace.
- STANDIN_MOUNTS: JSON object mapping container paths to local directories; every path read
  (config file flags, base_path in models.config) goes through it, longest prefix first; plays
  the container's mount namespace.
- STANDIN_STRICT_FLAGS=1: stand-in addition; an unknown flag becomes a startup error instead of
  TF Serving's printed "unknown argument" (see flags.py).
- STANDIN_IGNORE_SIGTERM=1: ignore SIGTERM, as tensorflow_model_server does when it is the
  container's PID 1 (it installs no handler; TF Serving issue #1853). Off by default.
- STANDIN_PREDICT_DELAY_MS=N: a stand-in test knob, not a TF Serving setting: every client
  inference (not warmup) takes N ms longer inside its session run, as a slow model would, so
  load tests can show status reads and httpGet probes queueing behind predictions. Run
  timeouts count it (bundle.py).
- STANDIN_RELOAD_GROWTH_BYTES=N: a stand-in test knob, not copied from TF Serving's source:
  every config reload that changes what is served keeps N more bytes resident, modelling TF
  Serving's memory growth on reloads (tensorflow/serving#1215; growth.py). Off by default.
"""

STANDIN_NAME = "tfserving-standin"
# What --version and the HTTP Server header say: never mistaken for the real server.
SERVER_HEADER = "TF-Serving-stand-in (servedmodel; not TensorFlow Serving)"
# The TF Serving release whose behaviour is copied: the sources were read at tensorflow/serving
# master after 2.20.0 (the copied files are unchanged since 2.20.0); the operator runs 2.21.0.
COPIED_RELEASE = "2.21.0"
