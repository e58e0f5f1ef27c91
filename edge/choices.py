"""Choices of the CLI as str Enums, in a module light enough for the CLI to import at
start-up (no OpenCV, no interpreter), so Typer validates them at the boundary."""

from __future__ import annotations

from enum import Enum


class DisplayMode(str, Enum):
    """`--display`: show a window when a display exists (auto), always (on), never (off)."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


class BenchApi(str, Enum):
    """`--api`: which LiteRT API runs the model in `tledge bench`."""

    INTERPRETER = "interpreter"  # the classic tf.lite-style Interpreter
    COMPILED = "compiled"  # ai-edge-litert's CompiledModel


class ResizePolicy(str, Enum):
    """How a frame of any shape becomes the model's fixed input shape (see edge.preprocess)."""

    CENTER_CROP = "center_crop"
    STRETCH = "stretch"
