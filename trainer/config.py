"""Options for training, as frozen dataclasses split by concern; choices as str Enums.

Change one with `dataclasses.replace`; nothing here has side effects. The defaults of
`HyperParams` were chosen by measurement on ../shared/datasets/clothing-small at 224 px
with the real ImageNet weights (see BENCHMARKS.md, "Training").
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from edge.choices import ResizePolicy

#: Environment variable naming a local weights file (used when --weights is not given).
WEIGHTS_ENV = "TLEDGE_WEIGHTS"
#: Environment variable naming the cache folder (converted backbones, features).
CACHE_ENV = "TLEDGE_CACHE"


class Backbone(str, Enum):
    """Frozen ImageNet feature extractors tledge knows (see trainer/model.py's registry)."""

    MOBILENET_V2 = "mobilenet_v2"
    RESNET50 = "resnet50"


class WeightsKind(str, Enum):
    """Where the backbone's weights come from."""

    IMAGENET = "imagenet"  # Keras' cache (~/.keras/models), else Keras' download
    FILE = "file"  # a local .h5 / .weights.h5 file
    NONE = "none"  # random initialisation (tests, or an explicit choice)


class FeatureEngine(str, Enum):
    """How the frozen backbone's features are computed for the head."""

    AUTO = "auto"  # TFLite when it matches Keras within tolerance, else Keras
    TFLITE = "tflite"  # a float32 .tflite copy of the backbone on ai-edge-litert
    KERAS = "keras"  # a tf.function over the Keras model


class CacheMode(str, Enum):
    """Where computed features are kept between runs."""

    DISK = "disk"  # under TLEDGE_CACHE (default ~/.cache/tledge), keyed by content
    MEMORY = "memory"  # only for this run


class Distribute(str, Enum):
    """How the head is fitted: one dense layer on cached features, milliseconds per epoch."""

    AUTO = "auto"  # in NumPy on the CPU (no TensorFlow needed: trainer.head)
    MIRRORED = "mirrored"  # by Keras under MirroredStrategy over every visible device
    NONE = "none"  # as auto


@dataclass(frozen=True)
class WeightsSpec:
    """A resolved weights choice: `kind` plus the file for `WeightsKind.FILE`."""

    kind: WeightsKind
    path: Path | None = None
    origin: str = "flag"  # "flag", "env" or "default": where the choice came from

    @classmethod
    def parse(cls, value: str | None, env: dict[str, str] | None = None) -> "WeightsSpec":
        """--weights value (`imagenet` | `none` | PATH), else $TLEDGE_WEIGHTS, else imagenet."""
        environ = os.environ if env is None else env
        if value:
            low = value.strip().lower()
            if low in (WeightsKind.IMAGENET.value, WeightsKind.NONE.value):
                return cls(WeightsKind(low))
            return cls(WeightsKind.FILE, Path(value).expanduser())
        from_env = environ.get(WEIGHTS_ENV, "").strip()
        if from_env:
            return cls(WeightsKind.FILE, Path(from_env).expanduser(), origin="env")
        return cls(WeightsKind.IMAGENET, origin="default")

    def describe(self) -> str:
        return str(self.path) if self.kind is WeightsKind.FILE else self.kind.value


@dataclass(frozen=True)
class DataOptions:
    """Which images, and how they are split."""

    data_dir: Path
    val_split: float = 0.1  # fraction of each class, when the folder has no val/
    test_split: float = 0.1  # fraction of each class, when the folder has no test/
    subset: int | None = None  # at most this many images per class and split (quick runs)


@dataclass(frozen=True)
class ModelOptions:
    """The network: backbone, its input, its weights, the head's dropout."""

    backbone: Backbone = Backbone.MOBILENET_V2
    alpha: float = 1.0  # MobileNetV2 width multiplier (0.35 .. 1.4)
    image_size: int = 224  # pixels, square input
    weights: WeightsSpec = field(default_factory=lambda: WeightsSpec(WeightsKind.IMAGENET, origin="default"))
    dropout: float = 0.2
    resize: ResizePolicy = ResizePolicy.CENTER_CROP
    #: Fall back to random weights (loudly) when ImageNet weights cannot be obtained.
    allow_random_backbone: bool = False


@dataclass(frozen=True)
class FineTuneOptions:
    """The optional second stage: the top `blocks` backbone blocks and the head, trained
    on activations cached at the block boundary below them (trainer.fine_tune).

    The defaults were chosen by measurement on clothing-small at 224 px with the real
    ImageNet weights (scripts/sweep_fine_tune.py; BENCHMARKS.md, "Fine-tuning").
    """

    blocks: int | None = 0  # blocks above the cut; 0: off; None: auto (the backbone's measured default)
    # The sweep's lesson: the blocks memorise the cached views within a few epochs (train
    # loss falls while val loss rises), so the rate is low and the schedule short.
    epochs: int = 4  # the cosine spans these; early stopping on val loss may end sooner
    learning_rate: float = 1e-4  # peak, after the warm-up; Adam
    warmup_epochs: float = 1.0  # linear warm-up from 0, then cosine decay to 0
    patience: int = 2  # epochs without a lower val loss before stopping
    batch_size: int = 32
    augment_views: int = 2  # augmented copies of each training image cached at the cut

    @property
    def enabled(self) -> bool:
        return self.blocks != 0

    @staticmethod
    def parse_blocks(text: str) -> int | None:
        """`--fine-tune` value: a block count (0: off) or `auto`. ValueError otherwise."""
        value = text.strip().lower()
        if value == "auto":
            return None
        if value.isdigit():
            return int(value)
        raise ValueError(f"--fine-tune takes a number of blocks (0 = off) or 'auto', got {text!r}")


@dataclass(frozen=True)
class HyperParams:
    """Head training and the optional fine-tuning stage."""

    epochs: int = 40  # head epochs on cached features (milliseconds each); early stopping ends sooner
    batch_size: int = 32
    learning_rate: float = 1e-3
    # 0 by measurement on clothing-small (scripts/sweep_train.py): the best val accuracy of
    # the sweep, and smoothing shrinks the top-2 margins, so int8 rounding flips more
    # predictions. Users with noisy labels may still want --label-smoothing 0.1.
    label_smoothing: float = 0.0
    # Augmented copies of each training image in the feature cache. 0 by measurement: on
    # clothing-small (full, and 10 or 40 images per class) extra views did not raise
    # validation accuracy beyond noise, while each view adds a backbone pass per image.
    augment_views: int = 0
    class_weights: bool = True  # balance imbalanced classes in the loss
    patience: int = 8  # early-stopping epochs without val improvement
    fine_tune: FineTuneOptions = field(default_factory=FineTuneOptions)


@dataclass(frozen=True)
class RuntimeOptions:
    """How the work is executed; no effect on the result beyond float round-off."""

    engine: FeatureEngine = FeatureEngine.AUTO
    cache: CacheMode = CacheMode.DISK
    cache_dir: Path | None = None  # None: $TLEDGE_CACHE, else ~/.cache/tledge
    distribute: Distribute = Distribute.AUTO
    threads: int | None = None  # interpreter and decoder threads; None: all cores
    quiet: bool = False

    @property
    def cache_root(self) -> Path:
        """`cache_dir`, else $TLEDGE_CACHE, else ~/.cache/tledge."""
        return self.cache_dir or default_cache_dir()


@dataclass(frozen=True)
class TrainOptions:
    """Everything `tledge train` needs. `train.train(options)` never mutates it."""

    data: DataOptions
    model: ModelOptions = field(default_factory=ModelOptions)
    hyper: HyperParams = field(default_factory=HyperParams)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    out_dir: Path = Path("runs")
    name: str | None = None  # default: the data folder's name
    seed: int = 42

    def to_json(self) -> dict[str, Any]:
        """All options as JSON-ready values (paths as strings, enums as their values)."""
        return _jsonable(dataclasses.asdict(self))


def default_cache_dir() -> Path:
    """$TLEDGE_CACHE, else ~/.cache/tledge."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tledge"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value
