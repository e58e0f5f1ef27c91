"""Summary statistics of measured times: the one percentile helper of tledge."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def percentile(values: Sequence[float] | np.ndarray, q: float, empty: float = 0.0) -> float:
    """The q-th percentile (0..100) of `values`, linear interpolation; `empty` when there
    are no values (0.0 for live read-outs; pass float('nan') where "no data" must show)."""
    data = np.asarray(values, dtype=np.float64)
    return float(np.percentile(data, q)) if data.size else float(empty)
