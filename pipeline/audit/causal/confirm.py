"""The causal confirmation of an audit's flags (audit.causal.interventions), run with the model on a
worker: which records it needs (each confirmable class flag's first members by key hash,
and a pool of recipients), and the run itself (the model loaded as the job loads it,
occlusion and transplant batches, example PNGs)."""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np

from pipeline.audit.causal.interventions import CONFIRMABLE, Subject, confirm_flag
from pipeline.audit.metrics.relevance import relevance
from pipeline.audit.record.rows import Annotation, ground_truth
from pipeline.config import ModelConfig, SaliencyConfig
from pipeline.elements import key_priority
from pipeline.engine.explainer import Explainer
from pipeline.engine.from_config import explainer_options, model_spec
from pipeline.engine.models import load_model
from pipeline.maps import render
from pipeline.store.layout import audit_confirm_path

TESTED_GROUPS = ("class", "slice")  # the groups whose flags are tested
RECIPIENT_POOL = 256  # lines with the smallest key hashes: the transplant's recipients
EXAMPLE_SIZE = 96  # example PNGs are upscaled (nearest) to at least this many pixels


def flag_id(group: str, method: str, group_id: int | str, index: int) -> str:
    """The id that ties a flag of audit.json to its confirmation."""
    return f"{group}/{method}/{group_id}/{int(index)}"


def confirmable(parts: Iterable[dict]) -> list[tuple[str, dict, str, int | str, int]]:
    """(flag id, flag, group, group id, index) of every class and slice flag the test can
    run on."""
    out = []
    for part in parts:
        if part["group"] not in TESTED_GROUPS:
            continue
        for index, flag in enumerate(part["flags"]):
            if flag["kind"] in CONFIRMABLE:
                fid = flag_id(part["group"], part["method"], part["id"], index)
                out.append((fid, flag, part["group"], part["id"], index))
    return out


def flag_class(group: str, group_id: int | str, members: list) -> int | None:
    """The class a flag is tested for: the class of a class group; for a slice, the class
    most of its tested members' maps explain (the smaller id on a tie; None: no member)."""
    if group == "class":
        return int(group_id)
    targets = [int(r.target_class) for r in members]
    return min(set(targets), key=lambda c: (-targets.count(c), c)) if targets else None


def _first(keys: Iterable[str], n: int) -> list[str]:
    return sorted(set(keys), key=lambda k: (key_priority(k), k))[:n]


def wanted_keys(parts: list[dict], pool: list[str], members: int) -> frozenset[str]:
    """The record keys the confirmation reads (empty when there is nothing to confirm)."""
    flags = confirmable(parts)
    if not flags or members <= 0:
        return frozenset()
    keys = {k for _, flag, _, _, _ in flags for k in _first(flag["members"], members)}
    return frozenset(keys | set(pool))


def _subject(record, method: str | None, annotation, policy: str) -> Subject:
    _, mask = ground_truth(record, annotation, policy)  # the object: its mask, or its boxes
    maps = {method: relevance(record.gradients[method])} if method in record.gradients else {}
    return Subject(record.key, np.asarray(record.image), int(record.target_class), maps, mask)


def _png(pixels: np.ndarray) -> bytes:
    scale = max(1, -(-EXAMPLE_SIZE // min(pixels.shape[:2])))
    return render.encode_png(render.upscale(np.asarray(pixels), scale))


def confirm_all(
    parts: list[dict],
    records: list,
    pool: list[str],
    *,
    model: ModelConfig,
    saliency: SaliencyConfig,
    annotations: dict[str, Annotation],
    resize_policy: str,
    members: int,
    batch_size: int = 64,
) -> tuple[dict[str, dict], dict[str, bytes]]:
    """({flag id: confirmation with its example PNG paths}, {relative path: PNG bytes}) for
    the confirmable flags of ``parts``, from ``records`` (DecodedRecords: the wanted keys)."""
    flags = confirmable(parts)
    usable = [r for r in records if r.image is not None]
    if not flags or not usable or members <= 0:
        return {}, {}
    loaded = load_model(model_spec(model))
    explainer = Explainer(loaded.model, **explainer_options(loaded, saliency))

    def logits_fn(images: np.ndarray) -> np.ndarray:
        chunks = [explainer.logits(np.asarray(loaded.preprocess(images[i : i + batch_size]),
                                              np.float32))
                  for i in range(0, len(images), batch_size)]  # fmt: skip
        return np.concatenate(chunks)

    by_key: dict[str, list] = {}
    for record in sorted(usable, key=lambda r: r.record_id):
        by_key.setdefault(record.key, []).append(record)
    results, files = {}, {}
    for fid, flag, group, group_id, index in flags:
        method = flag["method"]
        first = [by_key.get(k, []) for k in _first(flag["members"], members)]
        cls = flag_class(group, group_id, [found[0] for found in first if found])
        chosen = [next((r for r in found if r.target_class == cls), None) for found in first]
        subjects = [_subject(r, method, annotations.get(r.key), resize_policy)
                    for r in chosen if r is not None]  # fmt: skip
        takers = [r for k in _first(pool, len(pool)) for r in by_key.get(k, [])[:1]
                  if r.target_class != cls and k not in flag["members"]]  # fmt: skip
        if not subjects:
            results[fid] = {"confirmed": False, "verdict": "not tested: no member's record"}
            continue
        recipients = [_subject(r, None, annotations.get(r.key), resize_policy) for r in takers]
        seed = zlib.crc32(fid.encode("utf-8"))
        result, examples = confirm_flag(flag, cls, subjects, recipients, logits_fn, seed=seed)
        result["class"] = cls
        result["images"] = {}
        for view, pixels in examples.items():
            path = audit_confirm_path(method, group, group_id, index, view)
            files[path] = _png(pixels)
            result["images"][view] = path
        results[fid] = result
    return results, files
