"""The weakly supervised object box of Simonyan et al. 2013, section 3.2, and its IoU.

From a saliency map alone: pixels above the 95% quantile of the map seed the object,
pixels below the 30% quantile seed the background; a colour segmentation spreads the two
seeds over the image; the box is the bounding box of the largest connected object region.

The segmentation minimises GrabCut's energy (Rother et al. 2004, the GraphCut the paper
uses): a colour model per side from its seeds (histograms of 8 levels per channel,
Laplace-smoothed, in place of GrabCut's Gaussian mixtures), unary terms -log p(colour |
side), seeds fixed, and a contrast-sensitive Potts term between 4-neighbours,
gamma * exp(-beta * |colour difference|^2) with beta = 1 / (2 mean |difference|^2) and
GrabCut's gamma = 50. It is minimised by mean-field updates (numpy, a few ms at 224 x 224)
rather than an exact min-cut: an approximation of the paper's step, documented as such.
"""

import dataclasses

import numpy as np

from pipeline.audit.metrics.relevance import check_map

OBJECT_QUANTILE = 0.95
BACKGROUND_QUANTILE = 0.30
LEVELS = 8  # colour histogram levels per channel
GAMMA = 50.0
ITERATIONS = 10
IOU_CORRECT = 0.5  # the detection criterion: correct at IoU >= 0.5
WORKING_SIDE = 112  # larger maps are segmented after block-averaging by an integer factor


def _colour_bins(image: np.ndarray) -> np.ndarray:
    q = np.clip(image.astype(np.int64) * LEVELS // 256, 0, LEVELS - 1)
    bins = np.zeros(image.shape[:2], np.int64)
    for c in range(image.shape[2]):
        bins = bins * LEVELS + q[..., c]
    return bins


def _log_likelihood(bins: np.ndarray, seeds: np.ndarray, size: int) -> np.ndarray:
    counts = np.bincount(bins[seeds], minlength=size).astype(np.float64) + 1.0
    return np.log(counts / counts.sum())[bins]


def _neighbours(a: np.ndarray, fill: float = 0.0) -> list[np.ndarray]:
    """a's value at each pixel's (up, down, left, right) neighbour; ``fill`` off the edge."""
    p = np.full((a.shape[0] + 2, a.shape[1] + 2, *a.shape[2:]), fill, dtype=a.dtype)
    p[1:-1, 1:-1] = a
    return [p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]]


@dataclasses.dataclass(frozen=True)
class Scene:
    """What the segmentation needs of an image alone, computed once and shared by every
    method's map of it: colour bins and the contrast-sensitive Potts weights."""

    shape: tuple[int, int]
    bins: np.ndarray  # int [H, W]: colour histogram bin of each pixel
    size: int  # number of bins
    weights: tuple[np.ndarray, ...]  # per neighbour direction, [H, W]

    @classmethod
    def of(cls, image: np.ndarray) -> "Scene":
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[..., None]
        shape = image.shape[:2]
        colour = image.astype(np.float64)
        valid = _neighbours(np.ones(shape, bool), fill=False)
        diffs = [((colour - n) ** 2).sum(-1) for n in _neighbours(colour)]
        mean_sq = np.mean(np.concatenate([d[v] for d, v in zip(diffs, valid)])) or 1.0
        weights = tuple(GAMMA * np.exp(-d / (2.0 * mean_sq)) * v for d, v in zip(diffs, valid))
        return cls(shape, _colour_bins(image), LEVELS ** image.shape[2], weights)


def segment(m: np.ndarray, image: np.ndarray | Scene) -> np.ndarray:
    """bool [H, W]: the object side of the seeded colour segmentation (module docstring);
    ``image`` may be given as its Scene, to share the image's part between maps."""
    a = check_map(m)
    scene = image if isinstance(image, Scene) else Scene.of(image)
    if scene.shape != a.shape:
        raise ValueError(f"image: got shape {scene.shape}; [H, W, C] of the map's {a.shape}.")
    hi, lo = np.quantile(a, OBJECT_QUANTILE), np.quantile(a, BACKGROUND_QUANTILE)
    fg, bg = a > hi, (a < lo) & ~(a > hi)
    if not fg.any() or not bg.any():  # a flat map seeds nothing: no object found
        return np.zeros(a.shape, bool)
    bins, size = scene.bins, scene.size
    unary = _log_likelihood(bins, fg, size) - _log_likelihood(bins, bg, size)  # > 0: object
    q = np.where(fg, 1.0, np.where(bg, 0.0, 1.0 / (1.0 + np.exp(-unary))))
    for _ in range(ITERATIONS):
        # Potts: each neighbour that is object pulls towards object, background away.
        field = sum(w * n for w, n in zip(scene.weights, _neighbours(2.0 * q - 1.0)))
        update = 1.0 / (1.0 + np.exp(-np.clip(unary + field, -50.0, 50.0)))
        q = 0.5 * (q + update)  # damped: synchronous updates would oscillate
        q[fg], q[bg] = 1.0, 0.0
    return q > 0.5


def _runs(mask: np.ndarray) -> list[tuple[int, int, int]]:
    """Every horizontal run of True: (row, start, stop), row by row, left to right."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), np.int8)
    padded[:, 1:-1] = mask
    rows, cols = np.nonzero(np.diff(padded, axis=1))
    return list(zip(rows[::2].tolist(), cols[::2].tolist(), cols[1::2].tolist()))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """bool [H, W]: the largest 4-connected region of ``mask`` (ties: the first found).

    Runs of each row, joined to the overlapping runs of the row above (union-find over
    runs: a few hundred per image, not one step per pixel)."""
    mask = np.asarray(mask, bool)
    out = np.zeros(mask.shape, bool)
    runs: list[tuple[int, int, int]] = []  # (row, start, stop)
    parent: list[int] = []

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    above: list[tuple[int, int, int]] = []  # (start, stop, run id) of the previous row
    current: list[tuple[int, int, int]] = []
    row = -1
    for y, start, stop in _runs(mask):
        if y != row:
            above = current if y == row + 1 else []
            current, row = [], y
        rid = len(runs)
        runs.append((y, start, stop))
        parent.append(rid)
        for a_start, a_stop, a_id in above:
            if a_start < stop and start < a_stop:  # columns overlap: 4-connected
                ra, rb = root(a_id), root(rid)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
        current.append((start, stop, rid))
    if not runs:
        return out
    sizes: dict[int, int] = {}
    for rid, (_, start, stop) in enumerate(runs):
        r = root(rid)
        sizes[r] = sizes.get(r, 0) + stop - start
    best = max(sizes, key=lambda r: (sizes[r], -r))
    for rid, (y, start, stop) in enumerate(runs):
        if root(rid) == best:
            out[y, start:stop] = True
    return out


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape[0] // f * f, a.shape[1] // f * f
    a = np.asarray(a, np.float64)[:h, :w]
    return a.reshape(h // f, f, w // f, f, *a.shape[2:]).mean(axis=(1, 3))


def _factor(shape: tuple[int, ...]) -> int:
    return max(1, -(-max(shape[:2]) // WORKING_SIDE))


def scene_for(image: np.ndarray) -> Scene:
    """The Scene weak_box segments for maps of this image's size (at the working size)."""
    f = _factor(np.shape(image))
    return Scene.of(image if f == 1 else _block_mean(image, f))


def weak_box(
    m: np.ndarray, image: np.ndarray, *, scene: Scene | None = None
) -> tuple[float, float, float, float] | None:
    """(ymin, xmin, ymax, xmax), max exclusive, of the largest object region; None when
    the map seeds no object. Maps larger than WORKING_SIDE are segmented at 1/f of their
    size (f the smallest integer that gets there; a 224 map at 112) and the box scaled
    back: a quarter of the pixels, the box within f pixels. ``scene``: scene_for(image),
    when several maps of one image are boxed."""
    a = check_map(m)
    f = _factor(a.shape)
    small_map = a if f == 1 else _block_mean(a, f)
    region = largest_component(segment(small_map, scene or scene_for(image)))
    if not region.any():
        return None
    rows, cols = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    h, w = a.shape
    return (float(rows[0] * f), float(cols[0] * f), float(min(h, (rows[-1] + 1) * f)),
            float(min(w, (cols[-1] + 1) * f)))  # fmt: skip


def iou(a, b) -> float:
    """Intersection over union of two (ymin, xmin, ymax, xmax) boxes (0 when both empty)."""
    ymin, xmin = max(a[0], b[0]), max(a[1], b[1])
    ymax, xmax = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, ymax - ymin) * max(0.0, xmax - xmin)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def weak_box_metrics(
    m: np.ndarray, image: np.ndarray, boxes, *, scene: Scene | None = None
) -> dict[str, float]:
    """{"box_iou": best IoU of the weak box with a ground-truth box (model-input
    coordinates), "box_correct": 1.0 at IoU >= 0.5 else 0.0}."""
    box = weak_box(m, image, scene=scene)
    best = max((iou(box, b) for b in boxes), default=0.0) if box is not None else 0.0
    return {"box_iou": best, "box_correct": float(best >= IOU_CORRECT)}
