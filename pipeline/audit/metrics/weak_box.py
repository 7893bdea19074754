"""The weakly supervised object box of Simonyan et al. 2013, section 3.2, and its IoU.

From a saliency map alone: pixels above the 95% quantile of the map seed the object,
pixels below the 30% quantile seed the background; a GraphCut colour segmentation with a
Gaussian mixture per side, estimated from the seeds, labels the rest; the box is the
bounding box of the largest connected object region.

The segmentation is OpenCV's GrabCut (Rother et al. 2004) initialised with that mask: the
seeds fixed, every other pixel "probably background", one iteration (the mixtures fitted
once to the seeds and one min-cut, which is the paper's step; GrabCut's re-estimation
loop measured no better and 3-5x slower, benchmarks/RESULTS.md). Connected regions are
scipy.ndimage's (4-connected).
"""

import cv2
import numpy as np
from scipy import ndimage

from pipeline.audit.metrics.relevance import check_map

OBJECT_QUANTILE = 0.95
BACKGROUND_QUANTILE = 0.30
GRABCUT_ITERATIONS = 1
IOU_CORRECT = 0.5  # the detection criterion: correct at IoU >= 0.5
WORKING_SIDE = 112  # larger maps are segmented after block-averaging by an integer factor
_GMM_PARAMETERS = 65  # OpenCV's model arrays: 5 components x (1 weight + 3 means + 9 covariances)


def _factor(shape: tuple[int, ...]) -> int:
    return max(1, -(-max(shape[:2]) // WORKING_SIDE))


def _shrunk(a: np.ndarray, f: int) -> np.ndarray:
    """``a`` block-averaged by the integer factor f (trailing rows/columns dropped)."""
    if f == 1:
        return a
    h, w = a.shape[0] // f, a.shape[1] // f
    return cv2.resize(a[: h * f, : w * f], (w, h), interpolation=cv2.INTER_AREA)


def scene_for(image: np.ndarray) -> np.ndarray:
    """The image as GrabCut segments it for maps of its size: 8-bit, three channels, at the
    working size. Compute it once per image when several maps of it are boxed."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"image: got shape {image.shape}; [H, W], [H, W, 1] or [H, W, 3].")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    pixels = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(_shrunk(pixels, _factor(image.shape)))


def segment(m: np.ndarray, scene: np.ndarray) -> np.ndarray:
    """bool [H, W]: the object side of the seeded GrabCut (module docstring) of a map and
    its image's :func:`scene_for`, both at the working size."""
    a = check_map(m).astype(np.float64)
    if scene.shape[:2] != a.shape:
        raise ValueError(f"image: got shape {scene.shape[:2]}; the map's {a.shape}.")
    hi, lo = np.quantile(a, OBJECT_QUANTILE), np.quantile(a, BACKGROUND_QUANTILE)
    fg, bg = a > hi, a < lo
    if not fg.any() or not bg.any():  # a flat map seeds nothing: no object found
        return np.zeros(a.shape, bool)
    mask = np.full(a.shape, cv2.GC_PR_BGD, np.uint8)
    mask[fg], mask[bg] = cv2.GC_FGD, cv2.GC_BGD
    models = np.zeros((1, _GMM_PARAMETERS)), np.zeros((1, _GMM_PARAMETERS))
    cv2.grabCut(scene, mask, None, *models, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """bool [H, W]: the largest 4-connected region of ``mask`` (ties: the first labelled,
    in row-major order)."""
    labels, n = ndimage.label(np.asarray(mask, bool))
    if n == 0:
        return np.zeros(labels.shape, bool)
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def weak_box(
    m: np.ndarray, image: np.ndarray, *, scene: np.ndarray | None = None
) -> tuple[float, float, float, float] | None:
    """(ymin, xmin, ymax, xmax), max exclusive, of the largest object region; None when
    the map seeds no object. Maps larger than WORKING_SIDE are segmented at 1/f of their
    size (f the smallest integer that gets there; a 224 map at 112) and the box scaled
    back: a quarter of the pixels, the box within f pixels. ``scene``: scene_for(image),
    when several maps of one image are boxed."""
    a = check_map(m)
    f = _factor(a.shape)
    scene = scene if scene is not None else scene_for(image)
    region = largest_component(segment(_shrunk(a.astype(np.float64), f), scene))
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
    m: np.ndarray, image: np.ndarray, boxes, *, scene: np.ndarray | None = None
) -> dict[str, float]:
    """{"box_iou": best IoU of the weak box with a ground-truth box (model-input
    coordinates), "box_correct": 1.0 at IoU >= 0.5 else 0.0}."""
    box = weak_box(m, image, scene=scene)
    best = max((iou(box, b) for b in boxes), default=0.0) if box is not None else 0.0
    return {"box_iou": best, "box_correct": float(best >= IOU_CORRECT)}
