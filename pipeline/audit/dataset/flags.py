"""Clever-Hans candidates: rules over a class's strategies and mean map, each flag with
its evidence (what was measured, the value, the threshold, the members).

- "corner": a cluster whose prototype puts at least CORNER_THRESHOLD of its mass in one
  corner square (a quarter of each side: 1/16 of the mass for a uniform map, so the
  threshold is 4x that share) - a watermark, a logo, a corner mark;
- "border": a cluster whose prototype puts at least BORDER_THRESHOLD of its mass in the
  border frame (a tenth of each side: 0.44 of a uniform 16 x 16 map) - frames, padding;
- "border_class": the same rule on the mean map of the whole class;
- "off_prototype": a minority cluster (at most half of the class sample) far from the
  class prototype: the distance of its members' mean attention shape from the other
  members', in units of the others' mean spread, is at least OFF_PROTOTYPE_THRESHOLD. The
  shape is the magnitude of the map's 2-D Fourier transform (strategies.shape_descriptor),
  the same wherever the object sits, so clusters that only differ in where the object is
  are not far (at most 0.8 on the clean controls, 37-43 for the planted corner mark).

The rules read prototypes and mean maps only, so they cost nothing per image. On the
synthetic clean controls of tests/test_audit_flags.py (an object anywhere in the middle
half, 4 seeds) they raise no flag; what they raise on a real clean model is the audit's
next measurement.
"""

import numpy as np

from pipeline.audit.dataset.strategies import Strategies, shape_descriptor
from pipeline.audit.metrics.spatial import border_mass, corner_masses

CORNER_THRESHOLD = 0.25
BORDER_THRESHOLD = 0.7
OFF_PROTOTYPE_THRESHOLD = 4.0


def prototype_distance(maps: np.ndarray, inside: np.ndarray) -> float:
    """Distance of the ``inside`` members' mean shape descriptor from the others' mean, in
    units of the others' mean distance from it (inf when the others do not vary)."""
    d = shape_descriptor(maps)
    rest = d[~inside]
    centre = rest.mean(axis=0)
    spread = float(np.linalg.norm(rest - centre, axis=1).mean())
    gap = float(np.linalg.norm(d[inside].mean(axis=0) - centre))
    return gap / spread if spread > 0 else (0.0 if gap == 0 else float("inf"))


def _flag(kind: str, method: str, cluster: int | None, members: list[str], evidence: dict):
    return {"kind": kind, "method": method, "cluster": cluster, "members": members,
            "evidence": evidence}  # fmt: skip


def class_flags(
    method: str,
    strategies: Strategies,
    keys: list[str],
    mean_map: np.ndarray,
    maps: np.ndarray | None = None,
) -> list[dict]:
    """The flags of one class and method (``keys``: the clustered members, in order;
    ``maps``: their downsampled maps, for the "off_prototype" rule)."""
    flags = []
    total = len(keys)
    for cluster, prototype in enumerate(strategies.prototypes):
        members = [k for k, label in zip(keys, strategies.labels) if label == cluster]
        corners = corner_masses(prototype)
        corner, mass = max(corners.items(), key=lambda item: item[1])
        common = {"cluster_size": len(members), "class_sample": total}
        if mass >= CORNER_THRESHOLD:
            evidence = {"measured": f"mass of the cluster prototype in the {corner} corner",
                        "value": mass, "threshold": CORNER_THRESHOLD, "corner": corner,
                        **common}  # fmt: skip
            flags.append(_flag("corner", method, cluster, members, evidence))
        frame = border_mass(prototype)
        if frame >= BORDER_THRESHOLD:
            evidence = {"measured": "mass of the cluster prototype in the border frame",
                        "value": frame, "threshold": BORDER_THRESHOLD, **common}  # fmt: skip
            flags.append(_flag("border", method, cluster, members, evidence))
        inside = strategies.labels == cluster
        if maps is not None and strategies.k > 1 and inside.sum() <= total / 2:
            distance = prototype_distance(maps, inside)
            if distance >= OFF_PROTOTYPE_THRESHOLD:
                evidence = {
                    "measured": "distance of the cluster's mean attention shape (|FFT| of "
                    "the map, position-free) from the other members', in their mean spreads",
                    "value": distance, "threshold": OFF_PROTOTYPE_THRESHOLD, **common,
                }  # fmt: skip
                flags.append(_flag("off_prototype", method, cluster, members, evidence))
    frame = border_mass(mean_map)
    if frame >= BORDER_THRESHOLD:
        evidence = {
            "measured": "mass of the class mean map in the border frame",
            "value": frame,
            "threshold": BORDER_THRESHOLD,
            "class_sample": total,
        }
        flags.append(_flag("border_class", method, None, list(keys), evidence))
    return flags
