"""Synthetic classes of saliency maps for the audit's strategy and flag tests: attention on
an object that sits anywhere in the middle half; in a ``shortcut`` fraction of the maps, on
a fixed mark (the top-left corner by default) instead, the object faint; with ``border``,
on a frame around every image."""

import numpy as np

from pipeline.audit.metrics.relevance import downsample


def blob(size: int, cy: float, cx: float, r: float) -> np.ndarray:
    y, x = np.mgrid[:size, :size]
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2.0 * r * r))


def synthetic_class(seed: int, *, shortcut: float = 0.0, border: bool = False, n: int = 120,
                    size: int = 64, mark: tuple[float, float] = (4, 4),
                    ) -> tuple[list[str], np.ndarray, np.ndarray]:  # fmt: skip
    """(keys, downsampled maps [n, 16, 16], planted bool [n])."""
    rng = np.random.default_rng(seed)
    keys, maps, planted = [], [], []
    for i in range(n):
        cy, cx = rng.uniform(16, 48, 2)
        m = blob(size, cy, cx, 6) * rng.uniform(0.8, 1.2)
        cut = rng.random() < shortcut
        if cut:
            m = 0.2 * m + blob(size, *mark, 2.5)
        if border:
            frame = np.zeros((size, size))
            frame[:4], frame[-4:], frame[:, :4], frame[:, -4:] = 1, 1, 1, 1
            m = 0.1 * m + frame
        keys.append(f"c/{i:03d}.png")
        maps.append(downsample(m + rng.uniform(0, 0.02, (size, size))))
        planted.append(cut)
    return keys, np.stack(maps), np.array(planted)
