"""SpRAy on a model trained here with a planted shortcut (a Clever-Hans class): in a third
of class 0's images the object is missing and a small mark sits in the top-left corner,
so the model learns the mark. The audit must flag class 0 with the marked images in the
flagged cluster, and raise nothing on the same model family trained without the mark."""

import numpy as np
import pytest

from pipeline.audit.dataset.aggregates import ClassAggregate
from pipeline.audit.dataset.audit_json import group_report
from pipeline.audit.metrics.relevance import downsample, relevance
from pipeline.engine.explainer import Explainer
from pipeline.testing.patterns import corner_images as _images
from pipeline.testing.patterns import trained as _trained


def _class_audit(model, images, labels, method: str) -> tuple[dict, dict[str, int]]:
    """The audit's report of each predicted class (the job's ClassAggregate and
    group_report path), and key -> index."""
    explainer = Explainer(model, precision="float32")
    predicted = np.argmax(explainer.logits(images), axis=1)
    gradients = explainer.explain(images, method, targets=predicted).gradients
    aggregates = {c: ClassAggregate(reservoir=1000) for c in (0, 1)}
    keys = {}
    for i, (g, c) in enumerate(zip(gradients, predicted)):
        key = f"img/{i:04d}.png"
        keys[key] = i
        aggregates[int(c)].add(key, metrics={}, small_map=downsample(relevance(g), 16),
                               confidence=1.0, correct=bool(c == labels[i]))  # fmt: skip
    reports = {
        c: group_report("class", method, c, a, neighbours=10, max_clusters=8)[0]
        for c, a in aggregates.items()
        if a.count
    }
    return reports, keys


@pytest.fixture(scope="module")
def planted():
    images, labels, marked = _images(0, planted=True)
    return _trained(images, labels, 0), images, labels, marked


@pytest.mark.slow
@pytest.mark.parametrize("method", ["vanilla", "guided"])
def test_the_planted_shortcut_is_flagged_with_the_marked_images(planted, method):
    model, images, labels, marked = planted
    reports, keys = _class_audit(model, images, labels, method)
    assert not reports[1]["flags"]  # the clean class stays clean
    flags = reports[0]["flags"]
    assert flags, (
        f"no flag on the shortcut class; clusters {[c['size'] for c in reports[0]['clusters']]}"
    )
    assert {f["kind"] for f in flags} <= {"corner", "border", "off_prototype"}
    flagged = {k for f in flags for k in f["members"]}
    marks = {k for k, i in keys.items() if marked[i]}
    assert len(flagged & marks) >= 0.9 * len(marks)  # the marked images are in it ...
    assert len(flagged - marks) <= 0.1 * len(flagged)  # ... and little else
    for f in flags:
        e = f["evidence"]
        assert {"measured", "value", "threshold"} <= set(e) and f["method"] == method


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_the_same_model_trained_without_the_mark_raises_no_flag(seed):
    images, labels, _ = _images(seed, planted=False)
    model = _trained(images, labels, seed)
    for method in ("vanilla", "guided"):
        reports, _ = _class_audit(model, images, labels, method)
        assert [f for r in reports.values() for f in r["flags"]] == []
