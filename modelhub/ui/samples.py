"""Bounded reads of a window's sampled requests, for pages and charts (the drift pass reads
every sample with `monitoring.sampling.iter_blocks`; a page cannot afford to), and the labels
of the drift code's bins."""

from datetime import datetime

import numpy as np

from modelhub.monitoring.models import SampleBlock

# A chart or page reads at most about this many samples of a window, from blocks spread
# over it: a month of samples is millions of rows.
WINDOW_SAMPLE_ROWS = 50_000
# How each column of a block is stored (modelhub.monitoring.sampling._store).
COLUMNS = {"features": "<f4", "outputs": "<f8"}


def window_sample(
    version_id: int, start: datetime, end: datetime, max_rows: int = WINDOW_SAMPLE_ROWS, column: str = "features"
) -> np.ndarray | None:
    """`column` ([n, features] or [n, outputs]) of samples in [start, end): every block when they hold
    at most about `max_rows` samples, else evenly spaced blocks holding about that many. None: no samples."""
    blocks = list(
        SampleBlock.objects.filter(version_id=version_id, last_time__gte=start, first_time__lt=end)
        .order_by("id")
        .values_list("id", "count")
    )
    step = max(1, -(-sum(count for _, count in blocks) // max_rows))
    chosen = [pk for pk, _ in blocks[::step]]
    rows = SampleBlock.objects.filter(pk__in=chosen).order_by("id").values_list("count", "times", column)
    parts = []
    for count, times, values in rows.iterator(chunk_size=20):
        seconds = np.frombuffer(times, dtype="<f8")
        inside = (seconds >= start.timestamp()) & (seconds < end.timestamp())
        parts.append(np.frombuffer(values, dtype=COLUMNS[column]).reshape(count, -1)[inside])
    current = np.vstack(parts) if parts else None
    return current if current is not None and len(current) else None


def bin_labels(edges: list[float]) -> list[str]:
    """A label per bin of `bin_counts`: a value equal to an edge falls in the bin it starts."""
    if not edges:
        return ["all values"]
    inner = [f"[{a:.4g}, {b:.4g})" for a, b in zip(edges, edges[1:], strict=False)]
    return [f"< {edges[0]:.4g}", *inner, f"≥ {edges[-1]:.4g}"]
