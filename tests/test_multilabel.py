"""Multi-label (sigmoid) heads: sigmoid probabilities, one record per positive label
(target labels_above), and the audit grouped per label."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from PIL import Image

from pipeline.audit.pipeline import run_audit
from pipeline.beam.run import run
from pipeline.config.checks import ConfigError
from pipeline.config.files import load_config
from pipeline.engine.targets import probabilities, resolve_head, resolve_targets
from pipeline.testing.reliability import SIZE, base_overrides, encode, read_records, write_files

FINDINGS = 3  # finding k: a bright blob in colour channel k, anywhere


def test_labels_above_takes_every_class_at_the_threshold_and_the_top_one_when_none():
    probs = np.array([[0.9, 0.2, 0.7], [0.1, 0.3, 0.2], [0.5, 0.5, 0.49]])
    rows, targets = resolve_targets(np.zeros((3, 3)), "labels_above", probabilities=probs,
                                    threshold=0.5)  # fmt: skip
    assert rows.tolist() == [0, 0, 1, 2, 2]
    assert targets.tolist() == [0, 2, 1, 0, 1]  # by probability; ties by class id
    with pytest.raises(ValueError, match="needs probabilities"):
        resolve_targets(np.zeros((1, 3)), "labels_above")


def test_heads_resolve_and_sigmoid_probabilities_are_per_class():
    assert resolve_head("auto", "sigmoid") == "sigmoid"
    assert resolve_head("auto", "softmax") == resolve_head("auto", None) == "softmax"
    assert resolve_head("sigmoid", None) == "sigmoid"
    with pytest.raises(ValueError, match="head: got 'multi'"):
        resolve_head("multi", None)
    logits = np.array([[0.0, 2.0, -800.0]])
    np.testing.assert_allclose(probabilities(logits, "sigmoid"),
                               [[0.5, 1 / (1 + np.exp(-2.0)), 0.0]], atol=1e-12)  # fmt: skip
    np.testing.assert_allclose(probabilities(logits, "softmax").sum(), 1.0)


def test_threshold_and_head_are_checked_in_the_config():
    with pytest.raises(ConfigError, match="saliency.threshold.*labels_above"):
        load_config(None, ["saliency.threshold=0.3"])
    with pytest.raises(ConfigError, match="saliency.threshold"):
        load_config(None, ["saliency.target=labels_above", "saliency.threshold=1.5"])
    with pytest.raises(ConfigError, match="model.head"):
        load_config(None, ["model.head=multilabel"])


def _image(present: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    pixels = rng.integers(0, 60, (SIZE, SIZE, 3)).astype(np.uint8)
    for k in present:
        y, x = rng.integers(0, SIZE - 5, size=2)
        pixels[y : y + 5, x : x + 5, k] = 250
    return pixels


def _multilabel_model(path: str) -> str:
    """Conv -> GAP -> Dense(3, sigmoid), trained on blobs by binary cross-entropy."""
    rng = np.random.default_rng(0)
    present = rng.random((384, FINDINGS)) < 0.5
    x = np.stack([_image(tuple(np.flatnonzero(p)), rng) for p in present]) / 255.0
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.GlobalMaxPooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(FINDINGS, activation="sigmoid")(h))
    model.compile(keras.optimizers.Adam(0.02), "binary_crossentropy")
    model.fit(x, present.astype(np.float32), epochs=40, batch_size=64, verbose=0)
    model.save(path)
    return path


@pytest.mark.slow
def test_a_multilabel_model_gets_sigmoid_probabilities_a_record_per_label_and_label_groups(
    tmp_path,
):
    model_path = _multilabel_model(str(tmp_path / "multi.keras"))
    rng = np.random.default_rng(1)
    subsets = [(0,), (1,), (2,), (0, 1), (1, 2), (0, 2), (0, 1, 2), ()]
    pixels = {f"img_{i}.png": _image(s, rng) for i, s in enumerate(subsets)}
    write_files(str(tmp_path / "data"), {k: encode(Image.fromarray(v), "PNG")
                                         for k, v in pixels.items()})  # fmt: skip
    out = str(tmp_path / "out")
    overrides = [*base_overrides(model_path, str(tmp_path / "data/*.png"), out),
                 "saliency.target=labels_above", "saliency.methods=[vanilla, gradcam]",
                 "audit.enabled=true", "audit.sanity_samples=0"]  # fmt: skip
    summary = run(load_config(None, overrides))
    assert summary.images_failed == 0

    model = keras.models.load_model(model_path)
    probs = model.predict(np.stack(list(pixels.values())) / 255.0, verbose=0)
    records = read_records(out)
    by_key: dict[str, list] = {}
    for record in records:
        by_key.setdefault(record.key, []).append(record)
    right = 0
    for i, (key, present) in enumerate(zip(pixels, subsets)):
        p = probs[i]
        positive = [int(c) for c in np.argsort(-p, kind="stable") if p[c] >= 0.5]
        expected = positive or [int(np.argmax(p))]
        got = sorted(by_key[key], key=lambda r: r.target_rank)
        assert [r.target_class for r in got] == expected  # one record per positive label
        assert [r.target_rank for r in got] == list(range(len(expected)))
        for r in got:  # sigmoid probabilities, not a softmax over the findings
            assert r.prediction_probability == pytest.approx(float(p.max()), abs=1e-5)
            listed = dict(zip(r.top_k_classes.tolist(), r.top_k_probabilities.tolist()))
            for c in range(FINDINGS):
                assert listed[c] == pytest.approx(float(p[c]), abs=1e-5)
        right += sorted(positive) == list(present)
    assert right >= 7  # the model learnt the findings (so several images have 2-3 records)
    assert len(records) >= 12

    audit = run_audit(load_config(None, overrides)).audit
    for c in range(FINDINGS):  # the class groups are per label explained
        group = audit["classes"][str(c)]
        members = [r for r in records if r.target_class == c]
        assert group["count"] == len(members)
        confidence = np.mean([probs[list(pixels).index(r.key)][c] for r in members])
        assert group["mean_confidence"] == pytest.approx(float(confidence), abs=1e-4)
