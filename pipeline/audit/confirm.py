"""Causal confirmation of a flag: does the flagged region change the model's output?

A flag (audit.flags, audit.hotspots) is a candidate. Per flag, for its class c, on up to
CONFIRM_MEMBERS of its members (the smallest key hashes) and CONFIRM_RECIPIENTS images the
model gives another class:

- **Occlusion.** Each member's region (the corner square of a ``corner`` flag, the border
  frame of ``border`` / ``border_class``, the member's hotspot window that matched for
  ``repeated_pattern``, its strongest for ``off_prototype``) is filled with the image's mean
  colour outside it; the control fills a region of the same size elsewhere in the same image
  (a random place not overlapping it; for a frame, a square of the frame's area inside it).
  Measured: the drop of the class-c logit, and how often a member the model gave c is no
  longer c (flips), each against its control.
- **Transplant.** The region's pixels of a member are pasted, at the same place, into an
  image of another class; the control pastes a patch of the same place and size in the
  region's mean colour (the same damage to the recipient, without the pattern). Measured:
  how often the recipient flips to c, against the control.

Effects are paired differences (region minus control) with percentile bootstrap intervals
(BOOTSTRAP resamples, INTERVAL coverage). A flag is **confirmed** when the logit-drop
interval lies above 0 and the occlusion-flip or the transplant-flip interval does too: the
region moves the decision, not only the score. A region that is the object itself also
drops the logit when occluded, and flips when the object is small; without boxes the test
cannot tell object from shortcut. With boxes, ``on_object`` is the share of tested members
whose region lies at least half inside a box: a confirmed flag with ``on_object`` >= 0.5
says "the model uses the object there", and the verdict says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from pipeline.audit.hotspots import HOTSPOT_FRACTION, window_sums
from pipeline.audit.metrics.spatial import BORDER_FRAME, CORNER_SIZE

CONFIRM_MEMBERS = 32
CONFIRM_RECIPIENTS = 64
BOOTSTRAP = 1000
INTERVAL = 0.95
ON_OBJECT = 0.5
WINDOW_KINDS = ("repeated_pattern", "off_prototype")
FRAME_KINDS = ("border", "border_class")
CONFIRMABLE = ("corner", *FRAME_KINDS, *WINDOW_KINDS)


@dataclasses.dataclass(frozen=True)
class Subject:
    """One image the test uses: its pixels at model-input size, its explained class, its
    relevance map per method (for hotspot windows) and its object boxes, if known."""

    key: str
    image: np.ndarray  # uint8 [H, W, C]
    target: int
    relevance: dict[str, np.ndarray]  # method -> [H, W]
    boxes: np.ndarray | None = None  # [N, 4] ymin, xmin, ymax, xmax in pixels


def _box(h: int, w: int, y: int, x: int, bh: int, bw: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[y : y + bh, x : x + bw] = True
    return mask


def _band(n: int, fraction: float) -> int:
    return max(1, int(round(fraction * n)))


def _elsewhere(h: int, w: int, bh: int, bw: int, avoid: np.ndarray, rng) -> np.ndarray:
    """A bh x bw box at a random place overlapping ``avoid`` as little as possible."""
    best, least = None, None
    for _ in range(64):
        y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        box = _box(h, w, y, x, bh, bw)
        overlap = int((box & avoid).sum())
        if least is None or overlap < least:
            best, least = box, overlap
        if overlap == 0:
            break
    return best


def region_masks(flag: dict, subject: Subject, rng) -> tuple[np.ndarray, np.ndarray]:
    """(the flag's region in this member, its control): boolean [H, W] masks."""
    h, w = subject.image.shape[:2]
    kind = flag["kind"]
    if kind in FRAME_KINDS:
        bh, bw = _band(h, BORDER_FRAME), _band(w, BORDER_FRAME)
        region = np.ones((h, w), bool)
        region[bh : h - bh, bw : w - bw] = False
        side = min(int(np.sqrt(region.sum())), h - 2 * bh, w - 2 * bw)
        control = _box(h, w, 0, 0, 0, 0)
        if side > 0:
            y, x = (
                int(rng.integers(bh, h - bh - side + 1)),
                int(rng.integers(bw, w - bw - side + 1)),
            )
            control = _box(h, w, y, x, side, side)
        return region, control
    if kind == "corner":
        bh, bw = _band(h, CORNER_SIZE), _band(w, CORNER_SIZE)
        corner = flag["evidence"].get("corner", "top_left")
        y = 0 if corner.startswith("top") else h - bh
        x = 0 if corner.endswith("left") else w - bw
        region = _box(h, w, y, x, bh, bw)
        return region, _elsewhere(h, w, bh, bw, region, rng)
    if kind not in WINDOW_KINDS:
        raise ValueError(f"flag kind {kind!r} has no region: use one of {CONFIRMABLE}.")
    side = max(1, round(min(h, w) * HOTSPOT_FRACTION))
    window = flag["evidence"].get("windows", {}).get(subject.key)
    if window is not None:  # the member's window that matched the pattern (its centre)
        y = int(np.clip(round(window[0] * h - side / 2), 0, h - side))
        x = int(np.clip(round(window[1] * w - side / 2), 0, w - side))
    else:  # the member's strongest window
        m = np.asarray(subject.relevance[flag["method"]], np.float64)
        y, x = np.unravel_index(int(np.argmax(window_sums(m, side))), (h - side + 1, w - side + 1))
    region = _box(h, w, int(y), int(x), side, side)
    return region, _elsewhere(h, w, side, side, region, rng)


def occlude(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with ``mask`` filled by the mean colour of the pixels outside it."""
    out = np.array(image, copy=True)
    outside = image[~mask] if (~mask).any() else image.reshape(-1, image.shape[-1])
    out[mask] = np.round(outside.mean(axis=0)).astype(image.dtype)
    return out


def _flat(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with its region's mean colour everywhere: a control patch of the same
    place, size and colour as the region, without its pattern."""
    return np.broadcast_to(np.round(image[mask].mean(axis=0)).astype(image.dtype), image.shape)


def transplant(recipient: np.ndarray, donor: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``recipient`` with the donor's pixels under ``mask`` (same place)."""
    return np.where(mask[..., None], donor, recipient)


def bootstrap(values: np.ndarray, rng, *, resamples: int = BOOTSTRAP) -> dict:
    """{"effect": mean, "low", "high": the percentile interval, "n"} of paired
    differences (None when there are none)."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return {"effect": None, "low": None, "high": None, "n": 0}
    means = v[rng.integers(0, v.size, (resamples, v.size))].mean(axis=1)
    tail = (1 - INTERVAL) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"effect": float(v.mean()), "low": float(low), "high": float(high), "n": int(v.size)}


def _on_object(region: np.ndarray, boxes: np.ndarray | None) -> bool | None:
    if boxes is None or not len(boxes):
        return None
    inside = np.zeros_like(region)
    for y0, x0, y1, x1 in np.asarray(boxes):
        inside[max(0, int(y0)) : int(np.ceil(y1)), max(0, int(x0)) : int(np.ceil(x1))] = True
    return bool((region & inside).sum() >= ON_OBJECT * region.sum())


def confirm_flag(
    flag: dict,
    cls: int,
    members: list[Subject],
    recipients: list[Subject],
    logits_fn: Callable[[np.ndarray], np.ndarray],
    *,
    seed: int = 0,
) -> tuple[dict, dict[str, np.ndarray]]:
    """(the flag's ``confirmation``, example images {"member_before", "member_after",
    "recipient_before", "recipient_after"}) for class ``cls``; ``logits_fn`` maps a uint8
    batch [N, H, W, C] to the model's logits [N, classes]."""
    rng = np.random.default_rng(seed)
    masks = [region_masks(flag, s, rng) for s in members]
    images = np.stack([s.image for s in members])
    occluded = np.stack([occlude(s.image, r) for s, (r, _) in zip(members, masks)])
    controls = np.stack([occlude(s.image, c) for s, (_, c) in zip(members, masks)])
    takers = [r for r in recipients if r.target != cls][:CONFIRM_RECIPIENTS]
    donors = [i % len(members) for i in range(len(takers))]
    pasted = [transplant(r.image, members[d].image, masks[d][0]) for r, d in zip(takers, donors)]
    pasted_c = [transplant(r.image, _flat(members[d].image, masks[d][0]), masks[d][0])
                for r, d in zip(takers, donors)]  # fmt: skip
    n, k = len(members), len(takers)
    batch = [images, occluded, controls]
    if k:
        batch += [np.stack([r.image for r in takers]), np.stack(pasted), np.stack(pasted_c)]
    logits = np.asarray(logits_fn(np.concatenate(batch)), np.float64)
    base, occ, ctl = logits[:n], logits[n : 2 * n], logits[2 * n : 3 * n]
    drop = (base[:, cls] - occ[:, cls]) - (base[:, cls] - ctl[:, cls])
    others = np.delete(base, cls, axis=1)
    margin = base[:, cls] - (others.max(axis=1) if others.size else 0.0)
    was = np.argmax(base, axis=1) == cls
    flips = (np.argmax(occ, axis=1) != cls).astype(float) - (np.argmax(ctl, axis=1) != cls)
    result = {
        "members_tested": n,
        "logit_drop": bootstrap(drop, rng),
        "margin_drop": bootstrap(drop / np.maximum(np.abs(margin), 1e-6), rng),
        "region_drop": float(np.mean(base[:, cls] - occ[:, cls])),
        "control_drop": float(np.mean(base[:, cls] - ctl[:, cls])),
        "occlusion_flip": bootstrap(flips[was], rng),
        "occlusion_flip_rate": float(np.mean(np.argmax(occ, axis=1)[was] != cls))
        if was.any()
        else None,
        "transplant_flip": {"effect": None, "low": None, "high": None, "n": 0},
        "recipients_tested": k,
    }
    examples = {"member_before": images[0], "member_after": occluded[0]}
    if k:
        tb, tp, tc = (
            logits[3 * n : 3 * n + k],
            logits[3 * n + k : 3 * n + 2 * k],
            logits[3 * n + 2 * k :],
        )
        to_c = (np.argmax(tp, axis=1) == cls).astype(float) - (np.argmax(tc, axis=1) == cls)
        result["transplant_flip"] = bootstrap(to_c, rng)
        result["transplant_flip_rate"] = float(np.mean(np.argmax(tp, axis=1) == cls))
        result["transplant_control_rate"] = float(np.mean(np.argmax(tc, axis=1) == cls))
        result["recipients_already_c"] = int((np.argmax(tb, axis=1) == cls).sum())
        examples.update(recipient_before=takers[0].image, recipient_after=pasted[0])
    on = [_on_object(r, s.boxes) for s, (r, _) in zip(members, masks)]
    known = [o for o in on if o is not None]
    result["on_object"] = float(np.mean(known)) if known else None
    above = [result[k]["low"] is not None and result[k]["low"] > 0
             for k in ("logit_drop", "occlusion_flip", "transplant_flip")]  # fmt: skip
    confirmed = above[0] and (above[1] or above[2])
    result["confirmed"] = bool(confirmed)
    if not confirmed:
        result["verdict"] = "not confirmed"
    elif result["on_object"] is not None and result["on_object"] >= ON_OBJECT:
        result["verdict"] = "confirmed, on the object (boxes): the model uses the object there"
    else:
        result["verdict"] = "confirmed: the region changes the decision"
    return result, examples
