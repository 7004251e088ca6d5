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

Not copied: the batching scheduler (batching parameters are parsed and validated, requests
are not batched); TLS/ALTS, platform config files, TFLite, mixed precision, thread-pool
factories and the gRPC health service (those flags are refused at startup with an
UNIMPLEMENTED error naming the stand-in); the profiler service; resource estimation; request
logging; the session timeout derived from gRPC deadlines; TensorFlow's own metrics beyond the
few listed in metrics.py; libevent's HTTP connection handling (Python's threading HTTP server
serves the same paths and bodies).

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
