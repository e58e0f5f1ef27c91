"""Fill a `--save-uncertain` folder the way a run does: through the real `UncertainSink`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge import inbox
from edge.results import FrameResult
from edge.uncertain import UncertainOptions, UncertainSink

LABELS = ("red", "green", "blue", "gray")
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "gray": (128, 128, 128)}  # RGB


def fill_inbox(folder: Path, tops: list[str], labels: tuple[str, ...] = LABELS, images: list[np.ndarray] | None = None) -> list[inbox.SavedFrame]:
    """One saved frame per entry of `tops` (the model's top-1 label for it), oldest first.

    The frames are `images` (RGB) when given, else 56x40 patches of each label's colour.
    """
    clock = [0.0]
    sink = UncertainSink(UncertainOptions(folder=folder, margin=1.0, save_per_minute=1.0, queue_size=len(tops) + 1), labels, "colours", "cd" * 32,
                         clock=lambda: clock[0])
    for index, top in enumerate(tops):
        scores = np.full(len(labels), 0.1, np.float32)
        scores[labels.index(top)] = 0.55
        scores[(labels.index(top) + 1) % len(labels)] = 0.25
        order = np.argsort(-scores)
        result = FrameResult(index, 1_780_000_000.0 + index, tuple((int(i), labels[i], float(scores[i])) for i in order[:3]),
                             1.0, 30.0, 0, scores=scores)
        frame_rgb = images[index] if images is not None else np.full((40, 56, 3), COLOURS[top], np.uint8)
        sink.emit(frame_rgb, result)
        clock[0] += 61.0  # past the rate limit
    sink.close()
    frames = list(inbox.list_frames(folder).frames)
    assert len(frames) == len(tops), "the sink did not save every frame"
    return frames
