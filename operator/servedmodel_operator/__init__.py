"""servedmodel's Kubernetes operator (kopf). Imports no TensorFlow, ever."""

from importlib import metadata

# The release: the package version (pyproject.toml) is the one source of truth for image tags;
# manifests/ and the docs are held equal to it by tests/unit/test_manifests.py.
RELEASE = metadata.version("servedmodel")
IMAGE_REPOSITORY = "ghcr.io/servedmodel"
OPERATOR_IMAGE = f"{IMAGE_REPOSITORY}/operator:{RELEASE}"
EXPORTER_IMAGE = f"{IMAGE_REPOSITORY}/exporter:{RELEASE}"

GROUP = "serving.servedmodel.io"
VERSION = "v1alpha1"
PLURAL = "servedmodels"
KIND = "ServedModel"
# The shared TF Serving of many ServedModels (its members).
SERVER_KIND = "ModelServer"
SERVER_PLURAL = "modelservers"

# The one field manager every server-side apply of this operator uses.
FIELD_MANAGER = "servedmodel-operator"
# Prefix of every annotation the operator (and kopf, configured by it) writes.
ANNOTATION_PREFIX = GROUP
