"""Which cluster and which flags an audit.json puts each record in, per method: what the
exporters (TensorBoard's projector, FiftyOne) attach to a record."""

from __future__ import annotations

import dataclasses

NO_CLUSTER = "-"


@dataclasses.dataclass(frozen=True)
class Membership:
    """One record's place in one method's audit."""

    cluster: str = NO_CLUSTER  # "<class>.<cluster>", NO_CLUSTER when in none
    flags: tuple[str, ...] = ()  # the kinds of the flags that name it
    confirmed: bool = False  # one of those flags was confirmed by its causal test


def memberships(audit: dict) -> dict[tuple[str, str], Membership]:
    """(method, record id) -> Membership, over every class of ``audit`` (audit.json)."""
    clusters: dict[tuple[str, str], str] = {}
    flags: dict[tuple[str, str], tuple[tuple[str, ...], bool]] = {}
    for cid, c in audit.get("classes", {}).items():
        for cluster in c.get("clusters", ()):
            for member in cluster["members"]:
                clusters[(cluster["method"], member)] = f"{cid}.{cluster['cluster']}"
        for flag in c.get("flags", ()):
            confirmed = bool((flag.get("confirmation") or {}).get("confirmed"))
            for member in flag["members"]:
                kinds, was = flags.get((flag["method"], member), ((), False))
                flags[(flag["method"], member)] = ((*kinds, flag["kind"]), was or confirmed)
    return {
        key: Membership(clusters.get(key, NO_CLUSTER), *flags.get(key, ((), False)))
        for key in set(clusters) | set(flags)
    }
