"""Causal confirmation (audit.confirm, audit.confirmation): hand-checked occlusion and
transplant on a model whose logits are known, and the whole path through the job on models
trained here: a moving tag and a fixed corner mark are flagged and confirmed in audit.json
with their numbers and example PNGs; the same family trained clean has no confirmed flag."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.audit.causal.confirm import confirmable, flag_class, wanted_keys
from pipeline.audit.causal.interventions import (
    Subject,
    bootstrap,
    confirm_flag,
    occlude,
    region_masks,
)
from pipeline.testing.patterns import corner_images, tag_images
from pipeline.testing.patterns import trained as _trained
from pipeline.testing.processes import run_cli

ROOT = Path(__file__).resolve().parents[1]


def _red_logits(images: np.ndarray) -> np.ndarray:
    """A 'model' that says class 1 exactly when a pixel is pure red: logits [0, 10 * red]."""
    red = ((images[..., 0] == 255) & (images[..., 1] == 0) & (images[..., 2] == 0)).any(axis=(1, 2))
    return np.stack([np.zeros(len(images)), 10.0 * red], axis=1)


def _subject(i: int, red_at: tuple[int, int] | None, rng) -> Subject:
    image = rng.integers(40, 200, (16, 16, 3)).astype(np.uint8)
    relevance = np.zeros((16, 16))
    if red_at is not None:
        y, x = red_at
        image[y, x] = (255, 0, 0)
        relevance[y, x] = 1.0
    return Subject(f"k{i}", image, 1 if red_at else 0, {"vanilla": relevance})


def test_occlusion_and_transplant_on_a_model_that_reads_one_red_pixel():
    rng = np.random.default_rng(0)
    members = [_subject(i, (int(rng.integers(2, 14)), int(rng.integers(2, 14))), rng)
               for i in range(12)]  # fmt: skip
    recipients = [_subject(100 + i, None, rng) for i in range(20)]
    flag = {"kind": "repeated_pattern", "method": "vanilla", "evidence": {}}
    result, examples = confirm_flag(flag, 1, members, recipients, _red_logits, seed=1)
    # Occluding the red pixel removes all 10 logits and flips every member; the control
    # region elsewhere removes nothing.
    assert result["region_drop"] == 10.0 and result["control_drop"] == 0.0
    assert result["logit_drop"]["effect"] == 10.0 and result["logit_drop"]["low"] == 10.0
    assert result["occlusion_flip_rate"] == 1.0 and result["occlusion_flip"]["effect"] == 1.0
    # Pasting the member's window into class-0 images makes them class 1; a patch of the
    # window's mean colour does not.
    assert result["transplant_flip_rate"] == 1.0 and result["transplant_control_rate"] == 0.0
    assert result["confirmed"] and result["verdict"].startswith("confirmed")
    assert result["object_cover"] is None and "cannot tell the object" in result["verdict"]
    assert (examples["member_after"] != examples["member_before"]).any()
    # A flag whose region the model ignores: members without red, the same windows.
    plain = [_subject(i, None, rng) for i in range(12)]
    for s, m in zip(plain, members):
        s.relevance["vanilla"][:] = m.relevance["vanilla"]
    unmoved, _ = confirm_flag(flag, 1, plain, recipients, _red_logits, seed=1)
    assert unmoved["logit_drop"]["effect"] == 0.0 and not unmoved["confirmed"]
    assert unmoved["verdict"] == "not confirmed"


def test_regions_controls_and_object_boxes():
    rng = np.random.default_rng(3)
    s = _subject(0, (5, 6), rng)
    corner = {"kind": "corner", "method": "vanilla", "evidence": {"corner": "bottom_right"}}
    region, control = region_masks(corner, s, rng)
    assert region[12:, 12:].all() and region.sum() == 16  # a quarter of each side
    assert control.sum() == 16 and not (control & region).any()
    frame = {"kind": "border", "method": "vanilla", "evidence": {}}
    region, control = region_masks(frame, s, rng)  # a tenth of each side: 2 pixels
    assert region.sum() == 16 * 16 - 12 * 12 and not (control & region).any()
    occluded = occlude(s.image, region)
    assert (occluded[region] == np.round(s.image[~region].mean(axis=0))).all()
    assert (occluded[~region] == s.image[~region]).all()
    whole = np.ones((16, 16), bool)  # an object box over the whole image
    members = [Subject("b", s.image, 1, s.relevance, whole)] * 6
    flag = {"kind": "repeated_pattern", "method": "vanilla", "evidence": {}}
    result, _ = confirm_flag(flag, 1, members, [], _red_logits)
    assert result["object_cover"] == 1.0 and result["verdict"].startswith("on the object")
    assert not result["confirmed"] and result["whole_region"]["changes_decision"]
    assert result["recipients_tested"] == 0 and result["transplant_flip"]["n"] == 0


def _boxed(i: int, red_at: tuple[int, int], box: tuple[int, int, int, int], rng) -> Subject:
    s = _subject(i, red_at, rng)
    mask = np.zeros((16, 16), bool)
    mask[box[0] : box[2], box[1] : box[3]] = True
    return Subject(s.key, s.image, s.target, s.relevance, mask)


def test_a_corner_that_holds_the_object_is_not_confirmed_as_a_shortcut():
    """The held-out case: clean images whose object sits in the top-left corner, the box
    inside the corner square. The model reads the object (the red pixel inside the box):
    the whole corner changes the decision, the corner minus the object does not."""
    rng = np.random.default_rng(4)
    corner = {"kind": "corner", "method": "vanilla", "evidence": {"corner": "top_left"}}
    members = [_boxed(i, (1, 2), (0, 0, 3, 3), rng) for i in range(10)]  # object inside
    recipients = [_subject(100 + i, None, rng) for i in range(20)]
    result, _ = confirm_flag(corner, 1, members, recipients, _red_logits, seed=2)
    assert result["object_cover"] == pytest.approx(9 / 16)  # a 3 x 3 box in the 4 x 4 corner
    assert result["whole_region"]["changes_decision"] and not result["confirmed"]
    assert result["verdict"].startswith("on the object")
    assert result["logit_drop"]["effect"] == 0.0  # the corner minus the object: nothing
    # The same corner holding a mark beside the object: confirmed, off the object.
    marked = [_boxed(i, (3, 3), (0, 0, 3, 3), rng) for i in range(10)]  # red outside the box
    result, _ = confirm_flag(corner, 1, marked, recipients, _red_logits, seed=2)
    assert result["confirmed"] and result["verdict"].startswith("confirmed, off the object")
    assert result["logit_drop"]["effect"] == 10.0 and result["transplant_flip_rate"] == 1.0


def test_bootstrap_interval_of_known_values():
    rng = np.random.default_rng(0)
    same = bootstrap(np.full(10, 2.5), rng)
    assert same == {"effect": 2.5, "low": 2.5, "high": 2.5, "n": 10}
    half = bootstrap(np.array([0.0, 1.0] * 50), rng)
    assert half["effect"] == 0.5 and 0.38 < half["low"] < 0.45 and 0.55 < half["high"] < 0.62
    assert bootstrap(np.array([]), rng)["effect"] is None


def test_which_flags_are_tested_and_for_which_class():
    parts = [
        {"group": "class", "method": "vanilla", "id": 2,
         "flags": [{"kind": "corner"}, {"kind": "repeated_pattern"}]},
        {"group": "slice", "method": "vanilla", "id": "site=B", "flags": [{"kind": "border"}]},
        {"group": "label", "method": "vanilla", "id": 1, "flags": [{"kind": "corner"}]},
    ]  # fmt: skip
    found = confirmable(parts)
    assert [f[0] for f in found] == ["class/vanilla/2/0", "class/vanilla/2/1",
                                     "slice/vanilla/site=B/0"]  # fmt: skip
    assert flag_class("class", 2, []) == 2

    class R:
        def __init__(self, target):
            self.target_class = target

    assert flag_class("slice", "site=B", [R(3), R(1), R(3), R(1), R(0)]) == 1  # tie: smaller
    assert flag_class("slice", "site=B", [R(4), R(4), R(1)]) == 4
    assert flag_class("slice", "site=B", []) is None
    assert wanted_keys(parts, ["p1"], 0) == frozenset()


def _job(tmp_path: Path, images: np.ndarray, labels: np.ndarray, seed: int, *more: str) -> dict:
    """Save a model trained on ``images`` and the images as PNGs, run the job with the
    audit on, and return audit.json."""
    model = _trained(images, labels, seed)
    model_path = tmp_path / "model.keras"
    model.save(model_path)
    for i, img in enumerate(images):
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(tmp_path / f"img_{i:04d}.png")
    out = tmp_path / "out"
    sets = [f"model.name={model_path}", "model.preprocessing=unit",
            f"source.pattern={tmp_path}/img_*.png", "saliency.methods=[vanilla]",
            "saliency.precision=float32", "batch.max_batch_size=64", f"output.dir={out}",
            "output.artifacts=false", "run.progress_every=0", "audit.enabled=true",
            "audit.annotations=\"\"", "audit.sanity_samples=0",
            "audit.faithfulness_fraction=0", "model.class_names=\"\"", *more]  # fmt: skip
    done = run_cli(
        "run",
        "--config",
        "configs/local.yaml",
        *[a for s in sets for a in ("--set", s)],
        env=dict(os.environ),
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "audit" / "audit.json").read_text()), out


def _flags(audit: dict) -> list[dict]:
    return [f for c in audit["classes"].values() for f in c["flags"]]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tag", "dim tag", "corner"])
def test_the_job_flags_and_confirms_a_learnt_shortcut(tmp_path, kind):
    if kind == "corner":
        images, labels, marked = corner_images(0, planted=True)
    else:  # the tag as bright as the object, and at half that
        images, labels, marked = tag_images(0, tagged=True, strength=0.5 if "dim" in kind else 1)
    # one slice (all the images sit in one folder): its flags are tested too
    audit, out = _job(tmp_path, images, labels, 0, "audit.slices=[folder]")
    marks = {f"img_{i:04d}.png" for i in np.flatnonzero(marked)}
    flags = [f for f in _flags(audit) if f["kind"] == "repeated_pattern"]
    assert flags, [f["kind"] for f in _flags(audit)]
    members = {k for f in flags for k in f["members"]}
    assert len(members & marks) >= 0.8 * len(marks) and len(members - marks) <= 0.2 * len(members)
    for f in flags:
        c = f["confirmation"]
        assert c["confirmed"], c
        assert c["logit_drop"]["low"] > 0 and c["members_tested"] == min(32, len(f["members"]))
        assert c["transplant_flip"]["low"] > 0  # the region alone moves other images to c
        for view in ("member_before", "member_after", "recipient_before", "recipient_after"):
            assert (out / c["images"][view]).is_file()
    report = (out / "audit" / "report.html").read_text()
    assert "confirmed: the region changes the decision" in report
    # repeated_pattern reads a pattern in most of one class as its object: classes only
    [sliced] = audit["slices"].values()
    assert "repeated_pattern" not in {f["kind"] for f in sliced["flags"]}
    if kind == "corner":  # the slice's SpRAy flags (corner, border) are tested for class 0
        assert {f["kind"] for f in sliced["flags"]} == {"corner", "border"}
        for f in sliced["flags"]:
            assert f["confirmation"]["class"] == 0 and f["confirmation"]["confirmed"]


@pytest.mark.slow
def test_the_job_confirms_no_flag_on_a_clean_model(tmp_path):
    images, labels, _ = tag_images(2, tagged=False)
    audit, _ = _job(tmp_path, images, labels, 2)
    assert [f for f in _flags(audit) if f.get("confirmation", {}).get("confirmed")] == []


def test_the_bootstrap_is_scipys_and_equals_the_hand_written_one_it_replaced():
    def hand_written(v, rng, resamples=1000):  # this project's before scipy.stats.bootstrap
        means = v[rng.integers(0, v.size, (resamples, v.size))].mean(axis=1)
        return tuple(np.percentile(means, [2.5, 97.5]))

    for seed, size in [(0, 32), (1, 5), (2, 64)]:
        v = np.random.default_rng(seed + 10).normal(0.3, 1.0, size)
        got = bootstrap(v, np.random.default_rng(seed))
        assert (got["low"], got["high"]) == pytest.approx(
            hand_written(v, np.random.default_rng(seed)), abs=1e-12)  # fmt: skip
    assert bootstrap(np.array([4.0]), np.random.default_rng(0))["low"] == 4.0
