"""Model-parameter randomisation (Adebayo et al. 2018), cascading from the top.

Step i replaces the trainable weights of the i top-most layers that have any (the logits
layer first) with Gaussian noise of each weight's own standard deviation, and recomputes
every method's maps on the same images and targets. Per method and step, averaged over the
images, three similarities with the original model's maps, as Adebayo et al. report them:
the Spearman rank correlation (average ranks for ties) of the relevance maps (sum over
channels of |g|), of the signed maps (sum over channels of g), and the SSIM of the
relevance maps each scaled to peak 1. The verdict (``depends_on_weights``) reads the first;
each statistic's own verdict at the same threshold is reported beside it. A method whose
maps stay correlated while the weights that make the decision are gone does not explain
the decision: gradients and SmoothGrad are expected to fall, guided backprop is known to
stay (it reconstructs the image). BatchNorm moving statistics are left as they are (they
are not learnt weights).

What the test cannot show (Binder et al. 2023): a low correlation means the maps depend
on the weights, not that they are right; randomising a layer also changes the scale and
the statistics of later activations (the signed statistic and SSIM see what |g| ranks
do not); a method can pass and still be unfaithful (see the deletion / insertion curves).
"""

import dataclasses
import logging
from typing import Any

import keras
import numpy as np

from pipeline.audit.metrics.correlation import spearman
from pipeline.audit.metrics.relevance import relevance
from pipeline.audit.metrics.ssim import ssim, unit_peak
from pipeline.choices import GUIDED_METHODS
from pipeline.config import ModelConfig, SaliencyConfig
from pipeline.engine.explainer import Explainer
from pipeline.engine.from_config import explainer_options, model_spec
from pipeline.engine.graph import plain_clone, wraps_saved_model
from pipeline.engine.models import load_model

DEPENDENCE_THRESHOLD = 0.5  # a method depends on the weights when a step falls below this
# The model's top blocks: on the shipped CNN, vanilla 0.67 / 0.53 / 0.32 and SmoothGrad
# 0.51 / 0.40 / 0.30 after 1 / 2 / 3 layers, guided 0.95 / 0.79 / 0.65; deeper steps erode
# guided too (0.35 at all 9), as the image reconstruction itself goes.
DEFAULT_STEPS = 3
CAVEAT = (
    "A low correlation says the maps depend on the weights, not that they are right: "
    "randomising a layer also rescales later activations, |g| ignores sign, and a method "
    "that passes can still be unfaithful (Binder et al. 2023; see the deletion / insertion "
    "curves)."
)

_LOG = logging.getLogger(__name__)

# methods.<m>.sanity of a SavedModel's audit: the check randomises layers top-down, and a
# SavedModel is one graph whose variables carry no layer order
SAVED_MODEL_SKIP = (
    "skipped: the model is a TensorFlow SavedModel, one graph without Keras layers, so its "
    "top layers cannot be randomised one by one (load the Keras model for this check)"
)


STATISTICS = ("spearman_abs", "spearman_signed", "ssim")  # the first decides the verdict


def similarity(statistic: str, g0: np.ndarray, g1: np.ndarray) -> float:
    """One statistic of two gradient maps [H, W, C] (or [H, W])."""
    if statistic == "spearman_abs":
        return spearman(relevance(g0), relevance(g1))
    if statistic == "spearman_signed":
        signed = [g if g.ndim == 2 else g.sum(axis=-1) for g in (np.asarray(g0), np.asarray(g1))]
        return spearman(*signed)
    if statistic == "ssim":
        return ssim(unit_peak(relevance(g0)), unit_peak(relevance(g1)))
    raise ValueError(f"statistic: got {statistic!r}; one of {list(STATISTICS)}.")


@dataclasses.dataclass(frozen=True)
class SanityResult:
    """Per method: each statistic after each cascading step, and the verdict."""

    layers: tuple[str, ...]  # randomised in this order (top first)
    correlations: dict[str, tuple[float, ...]]  # Spearman of |maps| (statistics' first)
    depends_on_weights: dict[str, bool]
    statistics: dict[str, dict[str, tuple[float, ...]]] = dataclasses.field(default_factory=dict)
    threshold: float = DEPENDENCE_THRESHOLD
    caveat: str = CAVEAT


def layers_top_down(model: keras.Model) -> list[str]:
    """Names of the layers with trainable weights, from the output towards the input."""
    return [layer.name for layer in reversed(model.layers) if layer.trainable_weights]


def randomise(model: keras.Model, name: str, rng: np.random.Generator) -> None:
    """Replace layer ``name``'s trainable weights, in place, with Gaussian noise of each
    weight's own standard deviation."""
    for variable in model.get_layer(name).trainable_weights:
        value = np.asarray(variable)
        scale = float(value.std()) or 1.0
        variable.assign(rng.normal(0.0, scale, value.shape).astype(value.dtype))


def _clone(op: Any) -> Any:
    return plain_clone(op) if isinstance(op, keras.layers.Layer) else op


def _maps(explainer: Explainer, x: np.ndarray, targets: np.ndarray, methods) -> dict:
    return {m: explainer.explain(x, m, targets=targets).gradients for m in methods}


def cascading_randomisation(
    model: keras.Model,
    x: np.ndarray,
    targets: np.ndarray,
    methods: tuple[str, ...],
    *,
    steps: int | None = DEFAULT_STEPS,
    randomisation_seed: int = 0,
    **explainer_options: Any,
) -> SanityResult:
    """Run the cascade on images ``x`` (model space) for ``targets``; ``steps`` caps how
    many layers are randomised (None: all that have trainable weights);
    ``explainer_options`` go to every Explainer (``seed`` is SmoothGrad's noise seed)."""
    if isinstance(methods, str):
        raise TypeError("methods: got a str; a tuple of method names is required.")
    # Only the logits model (softmax stripped): float32 and unfolded, so no variant is built.
    base = Explainer(model, fold=False, precision="float32").logits_model
    order = layers_top_down(base)[:steps]
    # One working copy randomised in place, layer after layer, under one Explainer: each
    # method is built and traced once (a throw-away model is not worth the fold's check).
    work = keras.models.clone_model(base, clone_function=_clone)
    work.set_weights(base.get_weights())
    explainer = Explainer(work, fold=False, **explainer_options)
    original = _maps(explainer, x, targets, methods)
    stats: dict[str, dict[str, list[float]]] = {m: {s: [] for s in STATISTICS} for m in methods}
    for i, name in enumerate(order, 1):
        randomise(work, name, np.random.default_rng(randomisation_seed + i))
        explainer.sync_copies()
        maps = _maps(explainer, x, targets, methods)
        for method in methods:
            pairs = list(zip(original[method], maps[method]))
            for statistic in STATISTICS:
                values = [similarity(statistic, a, b) for a, b in pairs]
                stats[method][statistic].append(float(np.mean(values)))
    correlations = {m: tuple(s[STATISTICS[0]]) for m, s in stats.items()}
    return SanityResult(
        layers=tuple(order),
        correlations=correlations,
        depends_on_weights={m: min(c) < DEPENDENCE_THRESHOLD for m, c in correlations.items()},
        statistics={m: {s: tuple(v) for s, v in by.items()} for m, by in stats.items()},
    )


def sanity_panel(
    model: ModelConfig, saliency: SaliencyConfig, sample: list, *, layers: int, seed: int = 0
) -> dict[str, dict]:
    """method -> the audit.json sanity panel, for a sample of DecodedRecords (loads the
    model as the run does; records written without their image are left out)."""
    usable = [r for r in sample if r.image is not None]
    if not usable:
        return {}
    loaded = load_model(model_spec(model))
    methods = tuple(m for m in usable[0].methods if all(m in r.methods for r in usable))
    if wraps_saved_model(loaded.model):  # no layers to randomise one by one: say so
        _LOG.info("sanity check %s", SAVED_MODEL_SKIP)
        return {m: {"skipped": SAVED_MODEL_SKIP, "images": len(usable)} for m in methods}
    _LOG.info("sanity check: cascading randomisation of %d layers on %d images",
              layers, len(usable))  # fmt: skip
    x = np.asarray(loaded.preprocess(np.stack([r.image for r in usable])), np.float32)
    targets = np.array([r.target_class for r in usable], np.int32)
    result = cascading_randomisation(
        loaded.model, x, targets, methods, steps=layers, randomisation_seed=seed,
        **explainer_options(loaded, saliency),
    )  # fmt: skip
    return {
        m: {
            "layers": list(result.layers),
            "correlations": list(result.correlations[m]),
            "depends_on_weights": result.depends_on_weights[m],
            # every statistic by step, and its own verdict at the same threshold
            "statistics": {s: list(v) for s, v in result.statistics[m].items()},
            "verdicts": {s: min(v) < result.threshold for s, v in result.statistics[m].items()},
            # Adebayo et al. 2018: gradients, SmoothGrad (and IG) change with the weights;
            # guided backprop's maps are known not to (it reconstructs the image).
            "expected": "may not depend" if m in GUIDED_METHODS else "depends",
            "threshold": result.threshold,
            "images": len(usable),
            "caveat": result.caveat,
        }
        for m in methods
    }
