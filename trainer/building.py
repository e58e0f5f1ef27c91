"""Building a run's Keras classifier, now or on a thread.

A run needs the Keras classifier only to hold the fitted head and be saved; the head
itself fits on cached features. When the features come from the cached TFLite backbone
(trainer.features.prepared) the classifier is therefore built on a thread: TensorFlow's
import starts at once, and the Keras graph is built once `start_graph()` is called. The
caller calls it once the head is built and its epochs are about to run, so that the
build (pure Python, seconds) runs beside the head's fit instead of taking the CPU from
the feature pass. Not earlier: the graph's layers draw their initial seeds from
Python's process-wide generator, which the head's construction reads right after
setting the run's seed; the epochs draw from the head's own seed generators only. The
classifier's own initial weights do not matter: the backbone's are loaded from the
file and the head's are copied in.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any

from trainer import model as model_lib
from trainer.config import TrainOptions
from trainer.deps import require_keras

Built = tuple[model_lib.BuiltBackbone, Any]  # the backbone, the full classifier around it


def build_classifier(options: TrainOptions, num_classes: int, seeded: bool = True) -> Built:
    """The backbone (weights resolved) and the full classifier around it. `seeded`: set
    the run's seed first (not on a thread beside other work: Python's, NumPy's and
    TensorFlow's generators are process-wide)."""
    keras = require_keras("tledge train")
    if seeded:
        keras.utils.set_random_seed(options.seed)
    backbone = model_lib.build_backbone(options.model)
    return backbone, model_lib.build_classifier(backbone, options.model, num_classes)


class BackgroundBuild:
    """`build_classifier` on a daemon thread; the graph waits for `start_graph()`."""

    def __init__(self, options: TrainOptions, num_classes: int) -> None:
        self._go = threading.Event()
        self._cancelled = False
        self._future: Future[Built] = Future()
        self.wait_s = 0.0  # seconds `result()` waited
        self._thread = threading.Thread(target=self._run, args=(options, num_classes), name="tledge-build", daemon=True)
        self._thread.start()

    def _run(self, options: TrainOptions, num_classes: int) -> None:
        try:
            require_keras("tledge train")
            self._go.wait()
            if self._cancelled:
                self._future.cancel()
                return
            self._future.set_result(build_classifier(options, num_classes, seeded=False))
        except BaseException as exc:  # handed to the caller of result()
            self._future.set_exception(exc)

    def start_graph(self) -> None:
        """Let the Keras graph be built (it waits for this)."""
        self._go.set()

    def cancel(self) -> None:
        """Do not build the graph (the run failed before it was needed)."""
        self._cancelled = True
        self._go.set()

    def result(self) -> Built:
        """The built backbone and classifier; re-raises the build's failure (e.g. a
        weights file that does not fit the backbone, or no TensorFlow installed)."""
        self.start_graph()
        tick = time.perf_counter()
        try:
            return self._future.result()
        finally:
            self.wait_s += time.perf_counter() - tick
