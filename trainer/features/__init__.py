"""The frozen backbone's features, computed once and cached.

Training only the head needs each image's pooled backbone features, not the image: they
are computed once per image (and per augmented view) and cached on disk, keyed by the
backbone's weights, the input size, the resize policy and each file's content. A head
epoch then costs milliseconds.

The feature pass is the cost that remains. The fastest way to run the frozen backbone
on a CPU is a float32 .tflite copy of it on ai-edge-litert; `FeatureEngine.AUTO` uses it
after checking on real images that its features match Keras', and falls back to a
`tf.function` over the Keras model otherwise. Images are decoded and resized by a thread
pool while the interpreter runs.

One job per module:

- ``views``: the clean and augmented views of an image (seeded by file and view);
- ``cache``: feature vectors by (file digest, view), on disk or in memory;
- ``keras_engine`` / ``tflite_engine``: the two extractors;
- ``engine_choice``: which extractor runs, and the evidence (TFLite checked against Keras);
- ``decoder``: images decoded and rendered by a thread pool, a bounded number ahead;
- ``extract``: the pass itself (cache hits, batches, failures, stats);
- ``training``: what a training run needs of it: which views per image, and the rows per split.
"""

from trainer.features.cache import FeatureCache, model_key, options_key
from trainer.features.decoder import Job
from trainer.features.engine_choice import EngineChoice, choose_engine
from trainer.features.extract import PassStats, extract
from trainer.features.views import CACHE_VERSION, CLEAN_VIEW, augment, render_views, view_names

__all__ = [
    "CACHE_VERSION", "CLEAN_VIEW", "EngineChoice", "FeatureCache", "Job", "PassStats",
    "augment", "choose_engine", "extract", "model_key", "options_key", "render_views", "view_names",
]
