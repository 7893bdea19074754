"""Where a map's mass sits: centre of mass, spread, border frame, corners, quadrants, and
what falls outside the central region.

Coordinates are normalised: a pixel (r, c) of an H x W map has its centre at
((r + 0.5) / H, (c + 0.5) / W), so (0, 0) is the top-left corner and (1, 1) the bottom-right.
Masses are fractions of the map's total (all 0 for an all-zero map).
"""

import numpy as np

from pipeline.audit.metrics.relevance import check_map

BORDER_FRAME = 0.1  # the border frame: this fraction of each side
CORNER_SIZE = 0.25  # each corner square: this fraction of each side
CENTRAL_REGION = 0.5  # the central region: the middle half of each side


def _distribution(m: np.ndarray) -> tuple[np.ndarray, float]:
    a = check_map(m)
    total = float(a.sum())
    return (a / total if total > 0 else np.zeros_like(a)), total


def _centres(n: int) -> np.ndarray:
    return (np.arange(n, dtype=np.float64) + 0.5) / n


def _band(n: int, fraction: float) -> int:
    if not 0.0 < fraction <= 0.5:
        raise ValueError(f"fraction: got {fraction!r}; 0 < fraction <= 0.5 is required.")
    return max(1, int(round(fraction * n)))


def centre_of_mass(m: np.ndarray) -> tuple[float, float]:
    """(y, x) of the mass centre, normalised to [0, 1]; (0.5, 0.5) for an all-zero map."""
    p, total = _distribution(m)
    if total <= 0:
        return 0.5, 0.5
    ys, xs = _centres(p.shape[0]), _centres(p.shape[1])
    return float((p.sum(axis=1) * ys).sum()), float((p.sum(axis=0) * xs).sum())


def spread(m: np.ndarray) -> float:
    """Root-mean-square distance of the mass from its centre, in normalised units
    (0 for a single pixel at the limit of resolution; ~0.41 for a uniform square map)."""
    p, total = _distribution(m)
    if total <= 0:
        return 0.0
    cy, cx = centre_of_mass(m)
    ys, xs = _centres(p.shape[0]), _centres(p.shape[1])
    var_y = float((p.sum(axis=1) * (ys - cy) ** 2).sum())
    var_x = float((p.sum(axis=0) * (xs - cx) ** 2).sum())
    return float(np.sqrt(var_y + var_x))


def border_mass(m: np.ndarray, frame: float = BORDER_FRAME) -> float:
    """Fraction of the mass in the frame of ``frame`` x each side along the image border."""
    p, total = _distribution(m)
    if total <= 0:
        return 0.0
    h, w = p.shape
    bh, bw = _band(h, frame), _band(w, frame)
    inner = p[bh : max(bh, h - bh), bw : max(bw, w - bw)].sum()
    return float(1.0 - inner)


def corner_masses(m: np.ndarray, size: float = CORNER_SIZE) -> dict[str, float]:
    """Mass in each corner square of ``size`` x each side."""
    p, _ = _distribution(m)
    h, w = _band(p.shape[0], size), _band(p.shape[1], size)
    return {
        "top_left": float(p[:h, :w].sum()),
        "top_right": float(p[:h, -w:].sum()),
        "bottom_left": float(p[-h:, :w].sum()),
        "bottom_right": float(p[-h:, -w:].sum()),
    }


def quadrant_masses(m: np.ndarray) -> dict[str, float]:
    """Mass in each quadrant; a pixel whose centre lies on a midline goes below / right."""
    p, _ = _distribution(m)
    top = _centres(p.shape[0]) < 0.5
    left = _centres(p.shape[1]) < 0.5
    return {
        "top_left": float(p[top][:, left].sum()),
        "top_right": float(p[top][:, ~left].sum()),
        "bottom_left": float(p[~top][:, left].sum()),
        "bottom_right": float(p[~top][:, ~left].sum()),
    }


def outside_centre_mass(m: np.ndarray, centre: float = CENTRAL_REGION) -> float:
    """Fraction of the mass outside the central box spanning the middle ``centre`` of each
    side (pixel centres inside [(1 - centre) / 2, (1 + centre) / 2))."""
    if not 0.0 < centre < 1.0:
        raise ValueError(f"centre: got {centre!r}; 0 < centre < 1 is required.")
    p, total = _distribution(m)
    if total <= 0:
        return 0.0
    lo, hi = (1.0 - centre) / 2.0, (1.0 + centre) / 2.0
    ys, xs = _centres(p.shape[0]), _centres(p.shape[1])
    inside = p[(ys >= lo) & (ys < hi)][:, (xs >= lo) & (xs < hi)].sum()
    return float(1.0 - inside)


def spatial_metrics(m: np.ndarray) -> dict[str, float]:
    """Every spatial metric of one map, flat (for a rows.jsonl row)."""
    cy, cx = centre_of_mass(m)
    out = {
        "centre_y": cy,
        "centre_x": cx,
        "spread": spread(m),
        "border_mass": border_mass(m),
        "outside_centre_mass": outside_centre_mass(m),
    }
    out.update({f"corner_{k}": v for k, v in corner_masses(m).items()})
    out.update({f"quadrant_{k}": v for k, v in quadrant_masses(m).items()})
    return out
