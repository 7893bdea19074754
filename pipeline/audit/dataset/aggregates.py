"""Per-class aggregates with bounded, mergeable accumulators (plain numpy; Beam wraps them).

One ``ClassAggregate`` per class holds: the count, correct predictions (when labels are
known), the summed confidence, per metric its sum and a fixed-bin histogram, the summed
(downsampled) map, and a reservoir of at most ``reservoir`` (key, map) members: the ones
whose key hashes smallest. That reservoir is a uniform sample, and merging two is exact
(the smallest hashes of the union): counts, histograms and members do not depend on how a
runner splits and combines bundles (float sums only up to rounding), and memory is per
class, not per image.
"""

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np

from pipeline.elements import key_priority

HISTOGRAM_BINS = 20
DEFAULT_RESERVOIR = 512
# Metrics on the model's logit scale: averaged, not binned on [0, 1].
UNBOUNDED = frozenset({"deletion_auc", "insertion_auc"})


@dataclasses.dataclass
class ClassAggregate:
    """The running aggregate of one class (see the module docstring)."""

    reservoir: int = DEFAULT_RESERVOIR
    count: int = 0
    labelled: int = 0
    correct: int = 0
    confidence: float = 0.0
    sums: dict[str, float] = dataclasses.field(default_factory=dict)
    seen: dict[str, int] = dataclasses.field(default_factory=dict)
    histograms: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    map_sum: np.ndarray | None = None
    # (priority, key, downsampled map, hotspots or None: audit.record.hotspots)
    members: list[tuple[int, str, np.ndarray, list[dict] | None]] = dataclasses.field(
        default_factory=list
    )
    # "deletion" / "insertion" -> (sum of the curves, how many): the mean curves
    curves: dict[str, tuple[np.ndarray, int]] = dataclasses.field(default_factory=dict)

    def add(
        self,
        key: str,
        *,
        metrics: Mapping[str, float],
        small_map: np.ndarray,
        confidence: float,
        correct: bool | None,
        curves: Mapping[str, np.ndarray] | None = None,
        hotspots: list[dict] | None = None,
    ) -> None:
        """Add one record: its metrics (fractions in [0, 1] binned on [0, 1]; others
        clipped into it), its downsampled map, confidence, and whether it was right
        (None: no label), and its deletion / insertion curves if any."""
        self.count += 1
        self.confidence += float(confidence)
        if correct is not None:
            self.labelled += 1
            self.correct += int(bool(correct))
        for name, value in metrics.items():
            if value is None or not np.isfinite(value):
                continue
            self.sums[name] = self.sums.get(name, 0.0) + float(value)
            self.seen[name] = self.seen.get(name, 0) + 1
            if name in UNBOUNDED:
                continue
            bins = self.histograms.setdefault(name, np.zeros(HISTOGRAM_BINS, np.int64))
            bins[min(int(np.clip(value, 0.0, 1.0) * HISTOGRAM_BINS), HISTOGRAM_BINS - 1)] += 1
        for mode, curve in (curves or {}).items():
            self._add_curve(mode, np.asarray(curve, np.float64), 1)
        small = np.asarray(small_map, dtype=np.float64)
        self.map_sum = small.copy() if self.map_sum is None else self.map_sum + small
        self.members.append((key_priority(key), key, small, hotspots))
        self._trim()

    def merge(self, other: "ClassAggregate") -> "ClassAggregate":
        """This aggregate with ``other`` added in (order-independent; sums up to rounding)."""
        self.count += other.count
        self.labelled += other.labelled
        self.correct += other.correct
        self.confidence += other.confidence
        for name, value in other.sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.seen[name] = self.seen.get(name, 0) + other.seen[name]
            if name in other.histograms:
                bins = self.histograms.setdefault(name, np.zeros(HISTOGRAM_BINS, np.int64))
                bins += other.histograms[name]
        for mode, (total, n) in other.curves.items():
            self._add_curve(mode, total, n)
        if other.map_sum is not None:
            self.map_sum = (
                other.map_sum.copy() if self.map_sum is None else self.map_sum + (other.map_sum)
            )
        self.members.extend(other.members)
        self._trim()
        return self

    def _add_curve(self, mode: str, total: np.ndarray, n: int) -> None:
        if mode not in self.curves:
            self.curves[mode] = (total.copy(), n)
            return
        held, count = self.curves[mode]
        if held.shape != total.shape:  # records of another step count: keep the first
            return
        self.curves[mode] = (held + total, count + n)

    def mean_curves(self) -> dict[str, dict]:
        """mode -> {"curve": mean curve, "n": curves averaged}."""
        return {m: {"curve": (t / n).tolist(), "n": n} for m, (t, n) in sorted(self.curves.items())}

    def _trim(self) -> None:
        if len(self.members) > self.reservoir:
            self.members.sort(key=_priority_then_key)
            del self.members[self.reservoir :]

    def summary(self) -> dict:
        """Plain JSON-ready numbers (the mean map and members stay arrays)."""
        return {
            "count": self.count,
            "accuracy": self.correct / self.labelled if self.labelled else None,
            "mean_confidence": self.confidence / self.count if self.count else None,
            "metrics": {n: self.sums[n] / self.seen[n] for n in sorted(self.sums)},
            "n": {n: self.seen[n] for n in sorted(self.seen)},
            "histograms": {n: self.histograms[n].tolist() for n in sorted(self.histograms)},
        }

    def mean_map(self) -> np.ndarray | None:
        """The mean of all the class's downsampled maps (not only the reservoir's)."""
        return None if self.map_sum is None else self.map_sum / self.count

    def sample(self) -> tuple[list[str], np.ndarray]:
        """The reservoir: member keys and their maps [m, s, s], in priority order."""
        members = sorted(self.members, key=_priority_then_key)
        return [m[1] for m in members], np.stack([m[2] for m in members])

    def member_hotspots(self) -> list[list[dict] | None]:
        """The reservoir's hotspots, in the order of :meth:`sample`."""
        return [m[3] for m in sorted(self.members, key=_priority_then_key)]


def _priority_then_key(member: tuple) -> tuple[int, str]:
    return member[0], member[1]


def merge_all(aggregates: Iterable[ClassAggregate], reservoir: int) -> ClassAggregate:
    """One aggregate from many (a CombineFn's merge_accumulators)."""
    out = ClassAggregate(reservoir=reservoir)
    for aggregate in aggregates:
        out.merge(aggregate)
    return out
