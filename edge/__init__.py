"""tledge edge runtime: runs an exported `.tflite` bundle on images, videos and cameras.

This package never imports TensorFlow (a test proves it). The interpreter comes from
`ai_edge_litert`, or `tflite_runtime` as the fallback, and is imported lazily in
`edge.runtime`.
"""

__version__ = "0.1.0"
