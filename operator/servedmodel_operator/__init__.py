"""servedmodel's Kubernetes operator (kopf). Imports no TensorFlow, ever."""

GROUP = "serving.servedmodel.io"
VERSION = "v1alpha1"
PLURAL = "servedmodels"
KIND = "ServedModel"

# The one field manager every server-side apply of this operator uses.
FIELD_MANAGER = "servedmodel-operator"
# Prefix of every annotation the operator (and kopf, configured by it) writes.
ANNOTATION_PREFIX = GROUP
