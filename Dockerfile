# syntax=docker/dockerfile:1.7
# Two images from one tree:
#   docker build --target operator -t ghcr.io/servedmodel/operator:<version> .
#   docker build --target exporter -t ghcr.io/servedmodel/exporter:<version> .
# (<version>: pyproject.toml's, the one source of truth for image tags)
# No Docker engine exists on the development machines; the kind e2e workflow builds both.

ARG PYTHON_VERSION=3.11
# Keep TensorFlow's minor equal to the TF Serving image's (tensorflow/serving:2.21.0).
ARG TENSORFLOW_VERSION=2.21.0
ARG TF_SERVING_API_VERSION=2.21.0

FROM python:${PYTHON_VERSION}-slim AS python-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY exporter/ exporter/

# --- operator: slim, no TensorFlow ------------------------------------------------------------
FROM python-base AS operator-build
ARG TF_SERVING_API_VERSION
# tensorflow-serving-api's metadata pulls in all of TensorFlow; the operator needs only its
# config protos (pure protobuf), hence --no-deps. The last line proves TensorFlow stayed out.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install . \
 && /opt/venv/bin/pip install --no-deps "tensorflow-serving-api==${TF_SERVING_API_VERSION}" \
 && /opt/venv/bin/python -c "import tensorflow_serving.config.model_server_config_pb2, servedmodel_operator.handlers" \
 && ! /opt/venv/bin/pip show tensorflow tensorflow-cpu >/dev/null 2>&1 \
 && ! /opt/venv/bin/pip show kubernetes >/dev/null 2>&1

FROM python:${PYTHON_VERSION}-slim AS operator
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=operator-build /opt/venv /opt/venv
# Non-root, numeric (runAsNonRoot can verify it); writes nothing: fine with a read-only root.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["servedmodel-operator"]
CMD ["--liveness=http://0.0.0.0:8080/healthz"]

# --- exporter: TensorFlow on CPU ---------------------------------------------------------------
FROM python-base AS exporter-build
ARG TENSORFLOW_VERSION
ARG TF_SERVING_API_VERSION
# Without the [and-cuda] extra (and no CUDA libraries in the image) TensorFlow runs on CPU.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install ".[exporter]" "tensorflow==${TENSORFLOW_VERSION}" \
    "tensorflow-serving-api==${TF_SERVING_API_VERSION}" \
 && /opt/venv/bin/servedmodel-export --help >/dev/null

FROM python:${PYTHON_VERSION}-slim AS exporter
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    HOME=/tmp
COPY --from=exporter-build /opt/venv /opt/venv
# The uid the exporter Jobs run as (runAsUser 1000), so files it writes are TF Serving's too.
USER 1000:1000
ENTRYPOINT ["servedmodel-export"]
