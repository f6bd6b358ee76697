"""The labels of the drift code's bins, for pages and charts. (The bounded read of a window's
samples is monitoring.sampling.window_sample: only monitoring knows how a block is stored.)"""


def bin_labels(edges: list[float]) -> list[str]:
    """A label per bin of `bin_counts`: a value equal to an edge falls in the bin it starts."""
    if not edges:
        return ["all values"]
    inner = [f"[{a:.4g}, {b:.4g})" for a, b in zip(edges, edges[1:], strict=False)]
    return [f"< {edges[0]:.4g}", *inner, f"≥ {edges[-1]:.4g}"]
