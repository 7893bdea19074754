"""The default job on the bundled model re-exported as a SavedModel, both ways a TensorFlow
team ships one (``model.export()`` and ``tf.saved_model.save`` with a serving signature
returning a dict): exit 0, twelve records with the .keras model's probabilities and maps,
and an audit whose sanity check says why it was skipped."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.audit.causal.sanity import SAVED_MODEL_SKIP
from pipeline.store import records
from pipeline.testing.processes import ROOT, run_cli

MODEL = ROOT / "examples" / "model" / "shapes_cnn.keras"
METHODS = "saliency.methods=[vanilla,smoothgrad]"


def _export(kind: str, path: str) -> None:
    model = keras.saving.load_model(MODEL, compile=False)
    if kind == "export":
        model.export(path, verbose=False)
        return
    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name="pixels")

    @tf.function(input_signature=[spec])
    def serve(x):
        return {"scores": model(x)}

    module = tf.Module()
    module.model, module.serve = model, serve
    tf.saved_model.save(module, path, signatures={"serving_default": serve})


def _run(tmp_path, name: str, *sets: str):
    out = tmp_path / name
    args = [a for s in (METHODS, f"output.dir={out}", *sets) for a in ("--set", s)]
    proc = run_cli("run", "--config", "configs/local.yaml", *args, timeout=900)
    return proc, out


@pytest.mark.slow
def test_the_default_job_runs_on_both_savedmodel_kinds(tmp_path):
    keras_run, keras_out = _run(tmp_path, "keras", "saliency.precision=float32")
    assert keras_run.returncode == 0, keras_run.stderr[-3000:]
    expected = {r.key: r for r in records.read(str(keras_out))}
    for kind in ("export", "signature"):
        path = str(tmp_path / f"model-{kind}")
        _export(kind, path)
        proc, out = _run(tmp_path, kind, f"model.name={path}")  # precision: auto
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = {r.key: r for r in records.read(str(out))}
        assert sorted(got) == sorted(expected) and len(got) == 12
        for key, r in got.items():
            e = expected[key]
            assert r.prediction_class == e.prediction_class
            assert abs(r.prediction_probability - e.prediction_probability) < 1e-5
            for method in ("vanilla", "smoothgrad"):
                g, h = (
                    r.gradients[method].astype(np.float32),
                    e.gradients[method].astype(np.float32),
                )
                assert np.linalg.norm(g - h) / np.linalg.norm(h) < 1e-3, (kind, key, method)
        summary = json.loads((out / "summary.json").read_text())
        audit = json.loads((out / "audit" / "audit.json").read_text())
        assert audit["records"] == 12
        assert {m: s["sanity"]["skipped"] for m, s in audit["methods"].items()} == {
            "vanilla": SAVED_MODEL_SKIP, "smoothgrad": SAVED_MODEL_SKIP}  # fmt: skip
        assert SAVED_MODEL_SKIP in (out / "audit" / "report.html").read_text()
        # auto precision: float32 for the SavedModel, the reason in the summary (where
        # this machine would have reduced it) and logged once
        for note in summary["notes"]:
            assert "runs as float32" in note and proc.stderr.count(note) == 1
