"""The engine side of the method table (choices.METHOD_TABLE): each computation's Path
builder, and the one function that runs a method's Path.

A method is (computation, guided?, smooth?): the computation gives the Path, SmoothGrad's
noise tunnel wraps it, and the Explainer picks the (guided) model. Grad-CAM is not a
gradient path (it differentiates at a feature layer, methods.gradcam) and is not smoothed.
"""

import dataclasses
from collections.abc import Callable

import keras
import tensorflow as tf

from pipeline.choices import METHOD_SPECS, METHOD_TABLE, MethodSpec
from pipeline.engine.methods.gradient import gradient_path, target_gradient
from pipeline.engine.methods.integrated_gradients import integrated_path
from pipeline.engine.methods.loop import Path, sample_loop, target_logits
from pipeline.engine.methods.smoothgrad import noise_tunnel

CAM_COMPUTATION = "gradcam"  # methods.gradcam.CompiledCam, at the Grad-CAM layer


@dataclasses.dataclass(frozen=True)
class PathOptions:
    """The Explainer's options a Path reads (validated by the Explainer)."""

    samples: int
    noise: float
    ig_steps: int


def _gradient(x: tf.Tensor, baseline: tf.Tensor, options: PathOptions) -> Path:
    return gradient_path()


def _integrated(x: tf.Tensor, baseline: tf.Tensor, options: PathOptions) -> Path:
    return integrated_path(baseline, steps=options.ig_steps)


# computation -> its Path builder (x, baseline, options) -> Path
PATHS: dict[str, Callable[[tf.Tensor, tf.Tensor, PathOptions], Path]] = {
    "gradient": _gradient,
    "integrated_gradients": _integrated,
}


def _check_table() -> None:
    known = {*PATHS, CAM_COMPUTATION}
    for spec in METHOD_TABLE:
        if spec.computation not in known:
            raise ValueError(
                f"choices.METHOD_TABLE: method {spec.name!r} names computation "
                f"{spec.computation!r}; the engine has {sorted(known)}. Fix: register it "
                "in engine/methods/registry.py PATHS."
            )
        if spec.smooth and spec.computation == CAM_COMPUTATION:
            raise ValueError(f"choices.METHOD_TABLE: {spec.name!r}: Grad-CAM is not smoothed.")


_check_table()


def method_spec(method: str) -> MethodSpec:
    """The declaration of a (checked) method name."""
    return METHOD_SPECS[method]


def method_path(
    spec: MethodSpec, x: tf.Tensor, seeds: tf.Tensor, baseline: tf.Tensor, options: PathOptions
) -> Path:
    """The Path of a gradient method: its computation's, in a noise tunnel if smoothed."""
    path = PATHS[spec.computation](x, baseline, options)
    if spec.smooth:
        path = noise_tunnel(path, x, seeds, samples=options.samples, noise=options.noise)
    return path


def run_path(
    model: keras.Model,
    x: tf.Tensor,
    targets: tf.Tensor,
    path: Path,
    *,
    chunk_limit: int,
    loss_scale: float,
) -> tuple[tf.Tensor, tf.Tensor]:
    """(map, target logit of x) of each image. One input per image in one chunk is the
    plain batched gradient (no loop, gather or segment sum: the graph benchmarked); more
    run in the chunked sample loop."""
    batch = int(x.shape[0])
    if path.reps == 1 and batch <= chunk_limit:
        inputs, weight = path.make(x, tf.range(batch), tf.zeros([batch], tf.int32))
        grads, scores = target_gradient(model, inputs, targets, tf.ones([batch]), loss_scale)
        if weight is not None:
            grads = grads * weight
    else:
        grads, scores = sample_loop(
            model,
            x,
            targets,
            path,
            chunk_limit=chunk_limit,
            gradient_fn=target_gradient,
            loss_scale=loss_scale,
        )
        if path.reps > 1:  # the score of the image itself, not the mean over its inputs
            grads = grads / path.reps
            scores = target_logits(model, x, targets, chunk_limit)
    if path.row_weight is not None:
        grads = grads * path.row_weight(x)
    return grads, scores
