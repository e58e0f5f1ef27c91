"""tledge trainer: transfer learning on a folder of photos, and export to a .tflite bundle.

Importing this package does not import TensorFlow; the modules that need it import it
through `trainer.deps.require_tensorflow`, which explains how to install it.
"""

__version__ = "0.1.0"
