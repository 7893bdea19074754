"""The ``saliency:`` config section: which maps, for which class, and how (one stage, one
section)."""

from __future__ import annotations

import dataclasses

from pipeline.choices import (
    DEFAULT_IG_BASELINE,
    DEFAULT_IG_STEPS,
    DEFAULT_NOISE,
    DEFAULT_PRECISION,
    DEFAULT_SAMPLE_BATCH_SIZE,
    DEFAULT_SAMPLES,
    DEFAULT_SEED,
    DEFAULT_THRESHOLD,
    IG_BASELINES,
    METHODS,
    PRECISIONS,
    TARGET_MODES,
)
from pipeline.config.checks import check_choice, check_int, check_number, check_str, fail


@dataclasses.dataclass(frozen=True, kw_only=True)
class SaliencyConfig:
    """Which maps to compute, for which class, and how."""

    # Any of `vanilla`, `guided`, `smoothgrad`, `guided_smoothgrad`, `integrated_gradients`,
    # `gradcam`, `guided_gradcam` (Grad-CAM maps are [H, W, 1], upsampled to the input).
    methods: tuple[str, ...] = ("vanilla", "guided", "smoothgrad")
    # The class each map explains: `predicted`, `label` (ground truth), `class` (with
    # `target_class`, for every image), `top_k` (k records per image) or `labels_above`
    # (every class at or above `threshold`).
    target: str = "predicted"
    # target `class`: the class index.
    target_class: int | None = None
    # target `top_k`: how many classes per image.
    top_k: int = 1
    # target `labels_above` (multi-label): explain every class whose probability is at
    # least this, one record each (an image with none: its top class).
    threshold: float = DEFAULT_THRESHOLD
    # SmoothGrad: noisy copies per image (N).
    samples: int = DEFAULT_SAMPLES
    # SmoothGrad: sigma = noise x (max - min) of the input, in the model's input space.
    noise: float = DEFAULT_NOISE
    # Mixed into every image's noise seed (noise is seeded per image from its content).
    seed: int = DEFAULT_SEED
    # `float32` (exact), `mixed_float16`, `mixed_bfloat16` or `auto` (mixed_float16 on a GPU;
    # on a CPU with native bf16 mixed_bfloat16, but float32 for depthwise / separable
    # convolutions; else float32). A non-finite map is redone in float32.
    precision: str = DEFAULT_PRECISION
    # Model inputs per SmoothGrad / IG chunk inside one compiled function (memory bound).
    sample_batch_size: int = DEFAULT_SAMPLE_BATCH_SIZE
    # Integrated gradients: midpoint-rule steps.
    ig_steps: int = DEFAULT_IG_STEPS
    # Integrated gradients: the baseline, `zeros` (in model space) or `black` (pixels 0).
    ig_baseline: str = DEFAULT_IG_BASELINE
    # Jit-compile the gradient functions with XLA (helps on GPUs; same maps).
    xla: bool = False
    # gradcam / guided_gradcam: the layer whose feature maps are weighted; "": the last
    # layer with a spatial 4-D output (a CNN's last convolutional block).
    gradcam_layer: str = ""

    def __post_init__(self) -> None:
        methods = self.methods
        if isinstance(methods, str):
            methods = tuple(m.strip() for m in methods.split(",") if m.strip())
        if not isinstance(methods, (tuple, list)) or not methods:
            fail(
                "saliency.methods",
                self.methods,
                f"a non-empty list of {list(METHODS)} is required",
                "write e.g. methods: [vanilla, guided]",
            )
        for method in methods:
            check_choice("saliency.methods", method, METHODS)
        if len(set(methods)) != len(methods):
            fail("saliency.methods", list(methods), "each method may appear once", "remove dups")
        object.__setattr__(self, "methods", tuple(methods))
        check_choice("saliency.target", self.target, TARGET_MODES)
        if self.target == "class":
            if self.target_class is None:
                fail(
                    "saliency.target_class",
                    None,
                    "target 'class' needs the class index to explain",
                    "set saliency.target_class",
                )
            check_int("saliency.target_class", self.target_class, minimum=0)
        check_int("saliency.top_k", self.top_k, minimum=1, maximum=1000)
        if self.target != "top_k" and self.top_k != 1:
            fail(
                "saliency.top_k",
                self.top_k,
                f"top_k only applies with target 'top_k' (target is {self.target!r})",
                "set saliency.target=top_k or top_k=1",
            )
        check_number("saliency.threshold", self.threshold, minimum=0.0, maximum=1.0)
        if self.target != "labels_above" and self.threshold != DEFAULT_THRESHOLD:
            fail("saliency.threshold", self.threshold, "threshold only applies with target "
                 f"'labels_above' (target is {self.target!r})",
                 "set saliency.target=labels_above, or remove threshold")  # fmt: skip
        check_int("saliency.samples", self.samples, minimum=1, maximum=100_000)
        check_number("saliency.noise", self.noise, minimum=0.0, maximum=10.0)
        check_int("saliency.seed", self.seed, minimum=0)
        check_choice("saliency.precision", self.precision, PRECISIONS)
        check_int("saliency.sample_batch_size", self.sample_batch_size, minimum=1)
        check_int("saliency.ig_steps", self.ig_steps, minimum=1, maximum=10_000)
        check_choice("saliency.ig_baseline", self.ig_baseline, IG_BASELINES)
        if not isinstance(self.xla, bool):
            fail("saliency.xla", self.xla, "true or false is required")
        check_str("saliency.gradcam_layer", self.gradcam_layer, empty_ok=True)
