"""ExplainImages, the public PTransform: the README's example run as a user would, and the
element forms it accepts, read back from what the user's own sinks wrote."""

import glob
import json
import os
import re
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from pipeline.beam.transforms import ExplainImages, to_encoded_image
from pipeline.elements import EncodedImage
from pipeline.maps.views import compute_views
from pipeline.store import records

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "examples" / "model" / "shapes_cnn.keras")


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### In your own Beam pipeline") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_example_runs_in_a_user_pipeline(tmp_path, monkeypatch):
    os.symlink(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    exec(compile(_readme_example(), "README.md", "exec"), {"__name__": "readme_example"})

    jpgs = sorted(os.path.basename(p) for p in glob.glob(str(ROOT / "examples/images/*.jpg")))
    lines = []
    for path in glob.glob("out/example/predictions*.tsv"):
        lines += Path(path).read_text().splitlines()
    rows = sorted(line.split("\t") for line in lines)
    assert [r[0] for r in rows] == jpgs  # every image, once, in the user's own sink
    assert all(0 <= int(r[1]) < 5 and 0.0 < float(r[2]) <= 1.0 for r in rows)
    # The project's sinks wrote where they were told, nothing hidden in a staging dir.
    got = {r.key: r for r in records.read("out/example/records/*.tfrecord")}
    assert sorted(got) == jpgs
    manifest = [
        json.loads(x) for x in Path("out/example/manifest.jsonl").read_text().split("\n") if x
    ]
    assert sorted(m["key"] for m in manifest) == jpgs
    for row in manifest:
        for method in ("vanilla", "guided"):
            for view in ("heatmap", "overlay", "grid"):
                assert (tmp_path / "out/example" / row["artifacts"][method][view]).is_file()
    assert not (tmp_path / "out/example/.staging").exists()
    # The stored views are those of the stored gradient (computed once, for both writers).
    one = got[jpgs[0]]
    views = compute_views(one.gradients["guided"], views=("abs", "positive", "negative"))
    np.testing.assert_array_equal(one.maps["guided"]["abs"], views["abs"])
    assert {r[0]: int(r[1]) for r in rows} == {k: r.prediction_class for k, r in got.items()}


def _key_method_class(record) -> tuple:
    return record.key, sorted(record.gradients), record.views["vanilla"]["abs"].shape


def _key_stage(failure) -> tuple:
    return failure.key, failure.stage


@pytest.mark.slow
def test_pixel_arrays_labels_and_bad_elements():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (16, 16, 1), dtype=np.uint8)
    elements = [("rgb", pixels), ("grey", grey, 3), ("broken", b"not an image"), ("what", 7)]
    with beam.Pipeline(runner=FnApiRunner()) as p:
        explained = (
            p
            | beam.Create(elements)
            | ExplainImages(model=MODEL, methods=["vanilla"], precision="float32")
        )
        size = (64, 64)  # the bundled model's input size
        assert_that(
            explained.records | "Summaries" >> beam.Map(_key_method_class),
            equal_to([("grey", ["vanilla"], size), ("rgb", ["vanilla"], size)]),
            label="Records",
        )
        assert_that(
            explained.failures | "Stages" >> beam.Map(_key_stage),
            equal_to([("broken", "decode"), ("what", "input")]),
            label="Failures",
        )


def test_element_forms_and_options_are_checked_at_construction():
    assert to_encoded_image(("k", b"x", 4)) == EncodedImage(key="k", source="k", data=b"x", label=4)
    with pytest.raises(TypeError, match="EncodedImage, \\(key, encoded bytes\\)"):
        to_encoded_image(["k", b"x"])
    with pytest.raises(TypeError, match="key must be a str"):
        to_encoded_image((3, b"x"))
    with pytest.raises(ValueError, match="saliency.methods"):
        ExplainImages(model=MODEL, methods=["vanila"])
    with pytest.raises(TypeError, match="saliency options are"):
        ExplainImages(model=MODEL, sampels=3)


_COLLECTED: list = []


def _collect(record) -> None:
    """Keep a record here (a module function: the in-process runner pickles it by name)."""
    _COLLECTED.append(record)


@pytest.mark.slow
def test_faithfulness_curves_are_computed_in_the_handler_with_the_runs_maps():
    from pipeline.audit.metrics.faithfulness import deletion_and_insertion
    from pipeline.audit.metrics.relevance import relevance
    from pipeline.engine.explainer import Explainer
    from pipeline.engine.models import ModelSpec, load_model

    rng = np.random.default_rng(2)
    elements = [(f"img{i}", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for i in range(5)]
    _COLLECTED.clear()
    with beam.Pipeline(runner=FnApiRunner()) as p:
        explained = (
            p
            | beam.Create(elements)
            | ExplainImages(
                model=MODEL,
                methods=["vanilla", "guided"],
                precision="float32",
                faithfulness_steps=4,
                faithfulness_baseline=0.5,
            )  # fmt: skip
        )
        _ = explained.records | beam.Map(_collect)
    loaded = load_model(ModelSpec(name=MODEL, preprocessing="unit"))  # ModelConfig default
    explainer = Explainer(loaded.model, precision="float32")
    by_key = {r.key: r for r in _COLLECTED}
    assert sorted(by_key) == [k for k, _ in elements]
    x = np.asarray(loaded.preprocess(np.stack([px for _, px in elements])), np.float32)
    targets = np.array([by_key[k].target_class for k, _ in elements])
    for method in ("vanilla", "guided"):
        maps = np.stack(
            [relevance(g) for g in explainer.explain(x, method, targets=targets).gradients]
        )
        expected = deletion_and_insertion(explainer.logits, x, maps, targets, steps=4, baseline=0.5)
        for i, (key, _) in enumerate(elements):
            curves = by_key[key].faithfulness[method]
            for mode in ("deletion", "insertion"):
                assert len(curves[mode]) == 5
                np.testing.assert_allclose(curves[mode], expected[mode][i], rtol=1e-4, atol=1e-4)
            assert curves["deletion"][0] == pytest.approx(by_key[key].target_score, rel=1e-4)
    with pytest.raises(ValueError, match="faithfulness_steps"):
        ExplainImages(model=MODEL, faithfulness_steps=-1)


def test_faithfulness_fraction_chooses_records_by_key_hash():
    from pipeline.audit.record.curves import Faithfulness
    from pipeline.elements import key_priority

    keys = [f"img/{i}.png" for i in range(400)]
    half = Faithfulness(steps=4, baseline=0.0, fraction=0.5)
    chosen = [k for k in keys if half.chosen(k)]
    assert chosen == [k for k in keys if key_priority(k) / 2.0**64 < 0.5]
    assert 160 < len(chosen) < 240  # about half, and the same on every rerun
    assert all(Faithfulness(steps=4, baseline=0.0).chosen(k) for k in keys)
    assert not any(Faithfulness(steps=4, baseline=0.0, fraction=0.0).chosen(k) for k in keys)
    with pytest.raises(ValueError, match="faithfulness_fraction"):
        ExplainImages(model=MODEL, faithfulness_steps=4, faithfulness_fraction=1.5)
