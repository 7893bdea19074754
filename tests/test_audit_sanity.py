"""The sanity check on the shipped trained CNN: cascading randomisation of its top layers
changes vanilla and SmoothGrad maps, and barely changes guided backprop's."""

import glob
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.audit.sanity import CAVEAT, cascading_randomisation, layers_top_down, spearman
from pipeline.engine.models import ModelSpec, load_model

ROOT = Path(__file__).resolve().parents[1]


def test_spearman_of_maps():
    a = np.arange(16.0).reshape(4, 4)
    assert spearman(a, a * 3 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, np.ones((4, 4))) == pytest.approx(0.0, abs=1.0)  # ties: defined


@pytest.mark.slow
def test_cascading_randomisation_separates_gradients_from_guided_backprop():
    loaded = load_model(ModelSpec(name=str(ROOT / "examples/model/shapes_cnn.keras"),
                                  preprocessing="unit"))  # fmt: skip
    files = sorted(glob.glob(str(ROOT / "examples/images/*.jpg")))[:4]
    x = np.stack([np.asarray(Image.open(f).convert("RGB").resize((64, 64)), np.float32) / 255
                  for f in files])  # fmt: skip
    targets = np.argmax(np.asarray(loaded.model(x)), axis=1)
    result = cascading_randomisation(
        loaded.model, x, targets, ("vanilla", "guided", "smoothgrad"), samples=8
    )
    assert result.layers == tuple(layers_top_down(loaded.model)[:3])
    assert result.layers[0] == "predictions"  # the logits layer first
    c = result.correlations
    assert result.depends_on_weights == {"vanilla": True, "guided": False, "smoothgrad": True}
    assert all(g > v + 0.1 for g, v in zip(c["guided"], c["vanilla"]))
    assert c["vanilla"][-1] < c["vanilla"][0]  # falls as more of the model goes
    assert result.caveat == CAVEAT and "Binder et al. 2023" in CAVEAT
