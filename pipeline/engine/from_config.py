"""The engine's objects from config sections (shared by the model handler and the audit's
sanity check, so both load and explain exactly as the run does)."""

from typing import Any

from pipeline.config import ModelConfig, SaliencyConfig
from pipeline.engine.models import LoadedModel, ModelSpec


def model_spec(m: ModelConfig) -> ModelSpec:
    """The engine's ModelSpec for the model section of a config."""
    return ModelSpec(
        name=m.name,
        weights=m.weights,
        preprocessing=m.preprocessing,
        input_size=m.input_size,
        safe_mode=m.safe_mode,
        custom_objects=m.custom_objects,
        head=m.head,
    )


def explainer_options(loaded: LoadedModel, s: SaliencyConfig) -> dict[str, Any]:
    """Explainer keyword options for the saliency section's settings."""
    baseline: Any = loaded.black_image() if s.ig_baseline == "black" else s.ig_baseline
    return {
        "samples": s.samples,
        "noise": s.noise,
        "seed": s.seed,
        "precision": s.precision,
        "batch_size": s.sample_batch_size,
        "ig_steps": s.ig_steps,
        "ig_baseline": baseline,
        "xla": s.xla,
        "gradcam_layer": s.gradcam_layer,
        "head": loaded.head,  # the model is already at its logits: the resolved head
    }
