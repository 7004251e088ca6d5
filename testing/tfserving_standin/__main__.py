"""`python -m testing.tfserving_standin <tensorflow_model_server flags>`.

The TF Serving stand-in (see the package docstring): not TensorFlow Serving.
"""

import sys

from testing.tfserving_standin.server import main

sys.exit(main(sys.argv))
