"""The Explainer: one classifier, its model variants and compiled functions, kept.

Every map is the gradient of the target class's logit with respect to the model input, in
model space (after preprocessing), as in Simonyan et al. (2013). A softmax or sigmoid head
is stripped once, at construction (engine.heads), and reported; ``head`` says how the
logits become probabilities (softmax, or a sigmoid per class for multi-label models).

- Variants: (guided or not) x precision, each built on first use and kept. The float32
  variants are BatchNorm-folded when the fold keeps the input gradients (engine.folding,
  decided per variant on first use; ``fold_report``).
- One ``tf.function`` per (method, precision, input shape), each built
  with a fully specified ``input_signature``, so it traces exactly once; ``pad_to`` pads a
  short batch (repeating its last image) so the last batch of a run reuses the trace.
  Built without AutoGraph (explicit tf.while_loop; it never converts Keras layers' call,
  so it only cost time: about 0.7 s of a run's first batch on MobileNetV2).
- Reduced precision: the model is cast with ``precision.cast_model`` (float32 outputs). In
  float16 the target score is multiplied by ``FLOAT16_LOSS_SCALE`` before the gradient and
  the gradient divided by it afterwards, so small gradients do not underflow. A map (or
  score) that is not finite is recomputed with a lazily built float32 path and counted.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from pipeline.choices import (
    DEFAULT_IG_BASELINE,
    DEFAULT_IG_STEPS,
    DEFAULT_NOISE,
    DEFAULT_PRECISION,
    DEFAULT_SAMPLE_BATCH_SIZE,
    DEFAULT_SAMPLES,
    DEFAULT_SEED,
    PRECISIONS,
)
from pipeline.engine.checks import (
    check_baseline,
    check_images,
    check_index_vector,
    check_int,
    check_method,
    check_noise,
)
from pipeline.engine.features import CompiledFeatures
from pipeline.engine.folding import FoldReport, fold_checked
from pipeline.engine.graph import copy_state
from pipeline.engine.guided import GuidedReport, guided_model
from pipeline.engine.heads import logits_base
from pipeline.engine.methods.gradcam import CompiledCam, cam_layer
from pipeline.engine.methods.loop import chunked_logits
from pipeline.engine.methods.noise import image_seeds
from pipeline.engine.methods.registry import (
    CAM_COMPUTATION,
    PathOptions,
    method_path,
    method_spec,
    run_path,
)
from pipeline.engine.precision import cast_model, usable_precision
from pipeline.engine.targets import probabilities, resolve_head

_LOG = logging.getLogger(__name__)

# 2**12 lifts gradients of ~1e-8 into float16's normal range while leaving headroom below its
# maximum (65504) for gradients up to ~16; larger ones overflow and are redone in float32.
FLOAT16_LOSS_SCALE = 2.0**12

LOGITS = "logits"  # the forward pass's compiled function, keyed beside the methods


@dataclasses.dataclass(frozen=True, eq=False)
class Explanation:
    """Saliency for a batch: one gradient map, target and score per image."""

    gradients: np.ndarray  # float32 [B, H, W, C], d target logit / d model input
    targets: np.ndarray  # int64 [B]
    scores: np.ndarray  # float32 [B], the target logits
    method: str
    recomputed: int = 0  # maps that were non-finite in reduced precision, redone in fp32
    recomputed_rows: np.ndarray | None = None  # bool [B]: which rows were redone in fp32
    precision: str = "float32"  # the precision the maps were computed in (auto resolved)
    softmax_stripped: str | None = None  # the softmax head differentiated past, if any
    head: str = "softmax"  # how the logits become probabilities: "softmax" or "sigmoid"


class Explainer:
    """Holds a classifier at its logits, its variants and one compiled function per
    (method, batch shape). Inputs are in model space (preprocessed)."""

    def __init__(
        self,
        model: keras.Model,
        *,
        samples: int = DEFAULT_SAMPLES,
        noise: float = DEFAULT_NOISE,
        seed: int = DEFAULT_SEED,
        precision: str = DEFAULT_PRECISION,
        batch_size: int = DEFAULT_SAMPLE_BATCH_SIZE,
        ig_steps: int = DEFAULT_IG_STEPS,
        ig_baseline: str | float | np.ndarray = DEFAULT_IG_BASELINE,
        pad_to: int | None = None,
        xla: bool = False,
        fold: bool = True,
        gradcam_layer: str = "",
        head: str = "auto",
    ) -> None:
        base, stripped, kind = logits_base(model)
        self.head = resolve_head(head, kind)
        self.softmax_stripped = stripped if kind == "softmax" else None
        if not isinstance(fold, bool):
            raise TypeError(f"fold: got {fold!r}; True or False is required.")
        self.fold = fold
        self.samples = check_int("samples", samples, 1)
        self.noise = check_noise(noise)
        self.seed = check_int("seed", seed, 0)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.ig_steps = check_int("ig_steps", ig_steps, 1)
        self.ig_baseline = check_baseline(ig_baseline)
        self.pad_to = None if pad_to is None else check_int("pad_to", pad_to, 1)
        if not isinstance(xla, bool):
            raise TypeError(f"xla: got {xla!r}; True or False is required.")
        self.xla = xla
        if precision not in PRECISIONS:
            raise ValueError(
                f"precision: got {precision!r}; allowed values are {list(PRECISIONS)}. "
                "Fix: use 'float32' (exact) or 'auto' (reduced precision where the device "
                "has it)."
            )
        # a SavedModel runs in float32 whatever is asked (precision_note says why)
        self.precision, self.precision_note = usable_precision(precision, base)
        self.num_classes = int(base.outputs[0].shape[-1])
        if not isinstance(gradcam_layer, str):
            raise TypeError(f"gradcam_layer: got {gradcam_layer!r}; a layer name or ''.")
        if gradcam_layer:
            cam_layer(base, gradcam_layer)  # a wrong name fails here, not at the first map
        self.gradcam_layer = gradcam_layer
        if stripped:
            _LOG.info(
                "model %r: %s head stripped (%s); maps and scores are taken at the logits",
                model.name,
                kind,
                stripped,
            )
        self._base = base
        # The caller's variables that some variant holds a copy of (those can go stale when
        # the caller's model is trained; the rest are shared, always current).
        self._source_weights = list(model.weights)
        shared = {id(v) for v in base.weights}
        self._copied = [v for v in self._source_weights if id(v) not in shared]
        self._models: dict[tuple[bool, str], keras.Model] = {}
        self._folds: dict[bool, FoldReport] = {}
        self._functions: dict[tuple, Callable] = {}
        self._traces = 0
        self._guided_report: GuidedReport | None = None
        self._cam: CompiledCam | None = None  # Grad-CAM's compiled functions, on first use
        self._features: CompiledFeatures | None = None  # the audit's, on first use
        if self.precision != "float32":
            self._variant(guided=False, precision=self.precision)  # cast now: fail early

    # ---- models

    def _variant(self, *, guided: bool, precision: str) -> keras.Model:
        """The (guided?, precision) model, built on first use and kept."""
        key = (guided, precision)
        if key not in self._models:
            if precision == "float32":
                unfolded = self._base
                if guided:
                    unfolded, self._guided_report = guided_model(self._base)
                self._models[key], self._folds[guided] = (
                    fold_checked(unfolded)
                    if self.fold
                    else (unfolded, FoldReport(False, 0, None, "fold off (fold=False)"))
                )
                _LOG.debug("%s: %s", "guided" if guided else "plain", self._folds[guided])
            else:
                base = self._variant(guided=guided, precision="float32")
                self._models[key] = cast_model(base, precision)
            if self._models[key] is not self._base:  # a clone: copied weights
                self._copied = list(self._source_weights)
        return self._models[key]

    def sync_copies(self) -> None:
        """Copy the model's weights (changed in place) into every variant holding copies
        (guided, cast clones), keeping the compiled functions. A folded variant cannot
        follow (derived weights): build the Explainer with ``fold=False`` to use this."""
        for (guided, _), model in self._models.items():
            if model is self._base:
                continue
            if self._folds.get(guided) is not None and self._folds[guided].folded:
                raise ValueError(
                    "sync_copies: the "
                    + ("guided" if guided else "plain")
                    + " variant is BatchNorm-folded; build this Explainer with fold=False."
                )
            copy_state(self._base, model)

    def copied_weights(self) -> list:
        """The caller's variables that a built variant holds copies of ([]: none)."""
        return list(self._copied)

    @property
    def logits_model(self) -> keras.Model:
        """The float32 logits model of the maps (softmax stripped, unfolded)."""
        return self._base

    def guided_report(self) -> GuidedReport:
        """Build the guided clone now (once) and return its guided.GuidedReport."""
        self._variant(guided=True, precision="float32")
        return self._guided_report

    def fold_report(self, *, guided: bool = False) -> FoldReport:
        """Whether the (guided) float32 model is BatchNorm-folded, and why (builds it)."""
        self._variant(guided=guided, precision="float32")
        return self._folds[guided]

    # ---- compiled functions

    def _function(self, method: str, precision: str, shape: tuple) -> Callable:
        """The compiled function of one (method or LOGITS, precision, shape), built once."""
        key = (method, precision, shape)
        if key not in self._functions:
            guided = method != LOGITS and method_spec(method).guided
            model = self._variant(guided=guided, precision=precision)
            loss_scale = FLOAT16_LOSS_SCALE if precision == "mixed_float16" else 1.0
            signature = [
                tf.TensorSpec(shape, tf.float32),  # x
                tf.TensorSpec(shape[:1], tf.int32),  # targets
                tf.TensorSpec(shape[:1], tf.int64),  # seeds (uint64 bits)
                tf.TensorSpec(shape[1:], tf.float32),  # IG baseline
            ]
            self._functions[key] = tf.function(
                self._body(method, model, loss_scale),
                input_signature=signature,
                jit_compile=self.xla or None,
                reduce_retracing=False,
                autograph=False,
            )
        return self._functions[key]

    def _body(self, method: str, model: keras.Model, loss_scale: float) -> Callable:
        chunk = self.batch_size
        options = PathOptions(samples=self.samples, noise=self.noise, ig_steps=self.ig_steps)

        def run(x: tf.Tensor, targets: tf.Tensor, seeds: tf.Tensor, baseline: tf.Tensor):
            self._traces += 1  # runs only while tracing
            if method == LOGITS:
                logits = chunked_logits(model, x, chunk)
                return logits, tf.zeros([x.shape[0]], tf.float32)
            path = method_path(method_spec(method), x, seeds, baseline, options)
            return run_path(model, x, targets, path, chunk_limit=chunk, loss_scale=loss_scale)

        return run

    def _call(self, method: str, precision: str, x, targets, seeds, baseline):
        fn = self._function(method, precision, tuple(x.shape))
        grads, scores = fn(x, targets, seeds, baseline)
        return grads.numpy(), scores.numpy()

    # ---- batching

    def _pieces(self, batch: int) -> list[tuple[int, int]]:
        step = self.pad_to or batch
        return [(start, min(start + step, batch)) for start in range(0, batch, step)]

    def _padded(self, array: np.ndarray, size: int) -> np.ndarray:
        if self.pad_to is None or size >= self.pad_to:
            return array
        fill = np.repeat(array[-1:], self.pad_to - size, axis=0)
        return np.concatenate([array, fill], axis=0)

    def _baseline(self, image_shape: tuple) -> np.ndarray:
        if isinstance(self.ig_baseline, str):  # "zeros"
            return np.zeros(image_shape, np.float32)
        try:
            return np.ascontiguousarray(np.broadcast_to(self.ig_baseline, image_shape))
        except ValueError as error:
            raise ValueError(
                f"ig_baseline: shape {self.ig_baseline.shape} does not broadcast to the "
                f"image shape {image_shape}."
            ) from error

    # ---- public

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits [B, classes] float32 (reduced precision, float32 where non-finite)."""
        images = check_images(x)
        out = []
        for start, stop in self._pieces(images.shape[0]):
            piece = self._padded(images[start:stop], stop - start)
            n = piece.shape[0]
            args = (piece, np.zeros([n], np.int32), np.zeros([n], np.int64))
            args += (np.zeros(piece.shape[1:], np.float32),)
            logits, _ = self._call(LOGITS, self.precision, *args)
            if self.precision != "float32" and not np.all(np.isfinite(logits)):
                exact, _ = self._call(LOGITS, "float32", *args)
                bad = ~np.all(np.isfinite(logits), axis=1)
                logits[bad] = exact[bad]
            out.append(logits[: stop - start])
        if not out:
            return np.zeros([0, self.num_classes], np.float32)
        return np.concatenate(out, axis=0)

    def features(self, x: np.ndarray) -> np.ndarray | None:
        """The mid-level feature map float32 [B, h, w, C] (model-space images) that the
        audit matches patterns in (engine.features), on the float32 logits model; None
        when the model has no such layer."""
        self._features = self._features or CompiledFeatures(self._base, pad_to=self.pad_to)
        return self._features(check_images(x))

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Per-class probabilities [B, classes] (float64) by the head: softmax, or sigmoid
        per class for a multi-label head."""
        return probabilities(self.logits(x), self.head)

    def explain(
        self, x: np.ndarray, method: str, *, targets: Any, seeds: Any = None
    ) -> Explanation:
        """Saliency of ``targets`` (int [B]) for images x [B, H, W, C] in model space.

        ``seeds`` (uint64 [B]) seed the SmoothGrad noise per image; by default they are
        derived from the image content and the Explainer's seed (see ``image_seeds``).
        """
        method = check_method(method)
        images = check_images(x)
        batch = images.shape[0]
        target_array = check_index_vector("targets", targets, batch)
        if target_array.size and (target_array.min() < 0 or target_array.max() >= self.num_classes):
            raise ValueError(
                f"targets: got values in [{target_array.min()}, {target_array.max()}]; they "
                f"must be class indices in [0, {self.num_classes})."
            )
        spec = method_spec(method)
        if spec.computation == CAM_COMPUTATION:
            return self._explain_cam(images, target_array, method, seeds)
        seed_bits = self._seed_bits(images, spec.smooth, seeds)
        baseline = self._baseline(images.shape[1:])
        grads, scores, redone = [], [], []
        for start, stop in self._pieces(batch):
            size = stop - start
            args = (
                self._padded(images[start:stop], size),
                self._padded(target_array[start:stop].astype(np.int32), size),
                self._padded(seed_bits[start:stop], size),
                baseline,
            )
            g, s = self._call(method, self.precision, *args)
            if self.precision != "float32":
                bad = ~(np.all(np.isfinite(g), axis=(1, 2, 3)) & np.isfinite(s))
                bad[size:] = False  # padding rows repeat a real one
                if bad.any():
                    exact_g, exact_s = self._call(method, "float32", *args)
                    g[bad], s[bad] = exact_g[bad], exact_s[bad]
                redone.append(bad[:size])
            grads.append(g[:size])
            scores.append(s[:size])
        return Explanation(
            gradients=_joined(grads, images.shape),
            targets=target_array,
            scores=_joined(scores, (0,)),
            method=method,
            recomputed=int(sum(int(r.sum()) for r in redone)),
            recomputed_rows=np.concatenate(redone) if redone else np.zeros([batch], bool),
            precision=self.precision,
            softmax_stripped=self.softmax_stripped,
            head=self.head,
        )

    def _explain_cam(self, images: np.ndarray, targets: np.ndarray, method: str, seeds: Any):
        """Grad-CAM [B, H, W, 1] (float32, on the unfolded logits model); guided Grad-CAM:
        the guided gradient [B, H, W, C] times it."""
        if self._cam is None:
            self._cam = CompiledCam(self._base, self.gradcam_layer)
        cams, scores = [], []
        for start, stop in self._pieces(images.shape[0]):
            size = stop - start
            cam, score = self._cam(self._padded(images[start:stop], size),
                                   self._padded(targets[start:stop], size))  # fmt: skip
            cams.append(cam[:size])
            scores.append(score[:size])
        cam = _joined(cams, (*images.shape[:3], 1))
        if method_spec(method).guided:  # guided Grad-CAM: the guided gradient times the CAM
            guided = self.explain(images, "guided", targets=targets, seeds=seeds)
            return dataclasses.replace(guided, gradients=guided.gradients * cam, method=method)
        return Explanation(cam, targets, _joined(scores, (0,)), method, recomputed_rows=np.zeros(
            [images.shape[0]], bool), softmax_stripped=self.softmax_stripped,
            head=self.head)  # fmt: skip

    def _seed_bits(self, images: np.ndarray, smooth: bool, seeds: Any) -> np.ndarray:
        batch = images.shape[0]
        if seeds is not None:
            seed_array = np.asarray(seeds)
        elif smooth:
            seed_array = image_seeds(images, self.seed)
        else:  # no noise is drawn: skip hashing the images (~4% of a vanilla call on CPU)
            seed_array = np.zeros([batch], np.uint64)
        if seed_array.shape != (batch,) or not np.issubdtype(seed_array.dtype, np.integer):
            raise ValueError(f"seeds: got {seed_array.shape} {seed_array.dtype}; uint64 [B].")
        return seed_array.astype(np.uint64).view(np.int64)

    def trace_count(self) -> int:
        """How many times any of this Explainer's tf.functions traced."""
        return self._traces + (self._cam.traces if self._cam else 0)


def _joined(pieces: list[np.ndarray], empty_shape: tuple) -> np.ndarray:
    """Concatenate float32 pieces; a single piece is returned as it is (no copy)."""
    if not pieces:
        return np.zeros(empty_shape, np.float32)
    joined = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    return joined.astype(np.float32, copy=False)
