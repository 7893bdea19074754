"""Causal confirmation of a flag: does the flagged region change the model's output?

A flag (audit.dataset.flags, audit.dataset.repeated_patterns) is a candidate. Per flag,
for its class c, on up to CONFIRM_MEMBERS of its members (the smallest key hashes) and
CONFIRM_RECIPIENTS images the model gives another class:

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
(BOOTSTRAP resamples, INTERVAL coverage). The region **changes the decision** when the
logit-drop interval lies above 0 and the occlusion-flip or the transplant-flip interval
does too: the region moves the decision, not only the score.

The object is not a shortcut. With boxes or masks (a member's ``object`` mask), the test
runs on the region **minus the object** (and its control likewise), and ``object_cover``
says how much of the region the object covered; the whole region is tested too. Verdicts:

- ``confirmed, off the object``: the region outside the object changes the decision;
- ``on the object``: only the region with its object does (the model uses the object
  there; not a shortcut, ``confirmed`` is false);
- ``not confirmed``.

Without annotations the test cannot tell the object from a shortcut (a region that is the
object also drops the logit when occluded); the verdict says so.

A ``context`` flag (audit.dataset.relative) is tested by swapping backgrounds, which needs the
objects: each member's object on another class's background (the recipient's image, its
own object filled with its mean colour) against the member's object on another member's
background (the logit drop and the flips), and each recipient's object on a member's
background against it on another recipient's (flips to the class).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import scipy.stats

from pipeline.audit.metrics.spatial import BORDER_FRAME, CORNER_SIZE
from pipeline.audit.record.hotspots import HOTSPOT_FRACTION, window_sums

CONFIRM_MEMBERS = 32
CONFIRM_RECIPIENTS = 64
BOOTSTRAP = 1000
INTERVAL = 0.95
WINDOW_KINDS = ("repeated_pattern", "off_prototype")
FRAME_KINDS = ("border", "border_class")
CONFIRMABLE = ("corner", *FRAME_KINDS, *WINDOW_KINDS, "context")


@dataclasses.dataclass(frozen=True)
class Subject:
    """One image the test uses: its pixels at model-input size, its explained class, its
    relevance map per method (for hotspot windows) and its object (boxes' or the mask's
    pixels), if known."""

    key: str
    image: np.ndarray  # uint8 [H, W, C]
    target: int
    relevance: dict[str, np.ndarray]  # method -> [H, W]
    object: np.ndarray | None = None  # bool [H, W]: the annotated object(s)


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
    """{"effect": mean, "low", "high": SciPy's percentile bootstrap interval of the mean,
    "n"} of paired differences (None when there are none; one value is its own interval)."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return {"effect": None, "low": None, "high": None, "n": 0}
    if v.size == 1:
        low = high = float(v[0])
    else:
        ci = scipy.stats.bootstrap((v,), np.mean, n_resamples=resamples, method="percentile",
                                   confidence_level=INTERVAL, rng=rng, vectorized=True
                                   ).confidence_interval  # fmt: skip
        low, high = float(ci.low), float(ci.high)
    return {"effect": float(v.mean()), "low": low, "high": high, "n": int(v.size)}


def _effects(cls: int, n: int, k: int, logits: np.ndarray, rng) -> dict:
    """The paired effects of one test from its logits: [n images, n occluded, n controls,
    k recipients, k pasted, k pasted controls]."""
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
    above = [result[key]["low"] is not None and result[key]["low"] > 0
             for key in ("logit_drop", "occlusion_flip", "transplant_flip")]  # fmt: skip
    result["changes_decision"] = bool(above[0] and (above[1] or above[2]))
    return result


def _batch(members, masks, takers) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """(the test's images in _effects' order, the occluded members, the pasted recipients)."""
    images = np.stack([s.image for s in members])
    occluded = np.stack([occlude(s.image, r) for s, (r, _) in zip(members, masks)])
    controls = np.stack([occlude(s.image, c) for s, (_, c) in zip(members, masks)])
    donors = [i % len(members) for i in range(len(takers))]
    pasted = [transplant(r.image, members[d].image, masks[d][0]) for r, d in zip(takers, donors)]
    pasted_c = [transplant(r.image, _flat(members[d].image, masks[d][0]), masks[d][0])
                for r, d in zip(takers, donors)]  # fmt: skip
    batch = [images, occluded, controls]
    if takers:
        batch += [np.stack([r.image for r in takers]), np.stack(pasted), np.stack(pasted_c)]
    return batch, occluded, pasted


def _without_object(masks, members) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each member's (region, control) minus its object (a region left empty keeps one
    pixel outside the object, so every member is still tested)."""
    out = []
    for (region, control), s in zip(masks, members):
        if s.object is None:
            out.append((region, control))
            continue
        off, ctl = region & ~s.object, control & ~s.object
        out.append(
            (
                off if off.any() else _one_pixel(~s.object),
                ctl if ctl.any() else _one_pixel(~s.object),
            )
        )
    return out


def _one_pixel(allowed: np.ndarray) -> np.ndarray:
    mask = np.zeros_like(allowed)
    if allowed.any():
        mask[np.unravel_index(int(np.argmax(allowed)), allowed.shape)] = True
    return mask


def _context_test(cls, members, takers, logits_fn, rng) -> tuple[dict, dict]:
    """(the background-swap test of a ``context`` flag, its example images)."""
    members = [s for s in members if s.object is not None and s.object.any()]
    takers = [r for r in takers if r.object is not None and r.object.any()]
    if len(members) < 2 or len(takers) < 2:
        return {"confirmed": False, "changes_decision": False, "members_tested": len(members),
                "verdict": "not tested: the background swap needs boxes or masks of the "
                "members and of other classes' images"}, {}  # fmt: skip
    n, k = len(members), len(takers)

    def swap(obj_of: Subject, scene_of: Subject) -> np.ndarray:
        return np.where(
            obj_of.object[..., None],
            obj_of.image,
            occlude(scene_of.image, obj_of.object | scene_of.object),  # the background
        )

    images = np.stack([s.image for s in members])
    foreign = np.stack([swap(s, takers[i % k]) for i, s in enumerate(members)])
    own = np.stack([swap(s, members[(i + 1) % n]) for i, s in enumerate(members)])
    batch = [images, foreign, own, np.stack([r.image for r in takers]),
             np.stack([swap(r, members[i % n]) for i, r in enumerate(takers)]),
             np.stack([swap(r, takers[(i + 1) % k]) for i, r in enumerate(takers)])]  # fmt: skip
    result = _effects(cls, n, k, np.asarray(logits_fn(np.concatenate(batch)), np.float64), rng)
    result["confirmed"] = result["changes_decision"]
    result["verdict"] = (
        "confirmed, off the object: the class's backgrounds change the decision"
        if result["confirmed"] else "not confirmed"
    )  # fmt: skip
    examples = {"member_before": images[0], "member_after": foreign[0],
                "recipient_before": takers[0].image, "recipient_after": batch[4][0]}  # fmt: skip
    return result, examples


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
    takers = [r for r in recipients if r.target != cls][:CONFIRM_RECIPIENTS]
    if flag["kind"] == "context":
        return _context_test(cls, members, takers, logits_fn, rng)
    masks = [region_masks(flag, s, rng) for s in members]
    n, k = len(members), len(takers)
    known = [s.object is not None for s in members]
    tests = [masks] + ([_without_object(masks, members)] if any(known) else [])
    batches = [_batch(members, m, takers) for m in tests]
    # the originals (batch part 0) and the recipients (part 3) are the same in every test:
    # through the model once
    sent = [b for i, batch in enumerate(batches) for j, b in enumerate(batch[0])
            if i == 0 or j not in (0, 3)]  # fmt: skip
    logits = np.asarray(logits_fn(np.concatenate(sent)), np.float64)
    size = 3 * n + 3 * k
    whole = _effects(cls, n, k, logits[:size], rng)
    used, occluded, pasted = batches[-1]
    result = whole
    if len(tests) > 1:  # the second test's rows, with the first's originals and recipients
        rest = logits[size:]
        rows = [logits[:n], rest[: 2 * n], logits[3 * n : 3 * n + k], rest[2 * n :]]
        result = _effects(cls, n, k, np.concatenate(rows), rng)
    examples = {"member_before": used[0][0], "member_after": occluded[0]}
    if k:
        examples.update(recipient_before=takers[0].image, recipient_after=pasted[0])
    if not any(known):
        result["object_cover"] = None
        result["confirmed"] = result["changes_decision"]
        result["verdict"] = (
            "confirmed: the region changes the decision (no boxes or masks: the test cannot "
            "tell the object from a shortcut)"
            if result["confirmed"]
            else "not confirmed"
        )
        return result, examples
    covers = [float((r & s.object).sum() / max(1, r.sum())) for (r, _), s in zip(masks, members)
              if s.object is not None]  # fmt: skip
    result["object_cover"] = float(np.mean(covers))
    tested = ("logit_drop", "occlusion_flip", "transplant_flip", "changes_decision")
    result["whole_region"] = {key: whole[key] for key in tested}
    result["confirmed"] = result["changes_decision"]
    if result["confirmed"]:
        result["verdict"] = (
            "confirmed, off the object: the region outside the object changes the decision"
        )
    elif whole["changes_decision"]:
        result["verdict"] = (
            "on the object: only the region with its object changes the decision (the model "
            "uses the object there)"
        )
    else:
        result["verdict"] = "not confirmed"
    return result, examples
