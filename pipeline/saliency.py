"""Saliency maths: vanilla gradients, guided backprop, SmoothGrad, integrated gradients.

Every map is the gradient of the target class's pre-softmax logit with respect to the model
input, in model space (after preprocessing), as in Simonyan et al. (2013).

Design decisions (also in docs/architecture.md):

- One ``tf.function`` per (method, model variant, precision, input shape), each built with a
  fully specified ``input_signature``, so it traces exactly once. ``pad_to`` pads a short
  batch (repeating its last image) so the last batch of a run reuses the trace.
- SmoothGrad samples and IG steps are flattened to ``B * N`` model inputs and run in chunks of
  at most ``batch_size`` inputs inside one ``tf.while_loop``, one chunk at a time; per-image
  sums are accumulated with ``unsorted_segment_sum``. The chunks are sized evenly (the fewest
  chunks of at most ``batch_size``), and the last one is padded with masked copies, so every
  chunk has the same static shape and little work is wasted. A batch of vanilla or guided
  that fits one chunk is the plain batched gradient: no loop at all.
- SmoothGrad noise for (image i, sample j) is drawn from stateless Philox bits seeded with
  (seed_i, j) and turned into N(0, 1) by Box-Muller, per model input with ``tf.map_fn`` inside
  the chunk loop. It depends only on the image's seed and the sample index, never on batch
  neighbours, the chunking, the device or XLA (the raw Philox bits are the same everywhere;
  TF's own float conversion is not the same with XLA). ``image_seeds`` derives the seeds
  from the image bytes, so a rerun or another batch gives the same map.
- The Explainer folds each inference BatchNormalization that follows a linear Conv2D /
  DepthwiseConv2D into that convolution (``_fold_batchnorm``): the same function with fewer
  elementwise passes (MobileNetV2's gradient ~1.24x faster on CPU). The folded clone is
  checked against the original's logits at construction; on any doubt the original is kept.
- Integrated gradients use the midpoint Riemann rule, alpha_s = (s + 0.5) / steps, which is
  second-order accurate, so completeness holds closely with few steps.
- Reduced precision: the model is cast with ``precision.cast_model`` (float32 outputs). In
  float16 the target score is multiplied by ``FLOAT16_LOSS_SCALE`` before the gradient and the
  gradient divided by it afterwards, so small gradients do not underflow. A map (or score)
  that is not finite is recomputed with a lazily built float32 path and counted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

METHODS = ("vanilla", "guided", "smoothgrad", "guided_smoothgrad", "integrated_gradients")
TARGET_MODES = ("predicted", "label", "class", "top_k")
# 2**12 lifts gradients of ~1e-8 into float16's normal range while leaving headroom below its
# maximum (65504) for gradients up to ~16; larger ones overflow and are redone in float32.
FLOAT16_LOSS_SCALE = 2.0**12
# Chunks of the sample loop run one after another: with TF's default (10 in flight) a
# SmoothGrad call held several chunks' activations at once (7.6 GB peak RSS for chunks of 64
# MobileNetV2 224 inputs, 2.4 GB with one in flight) and gained no speed; on a GPU one chunk
# already fills the device, and memory is what bounds the chunk size.
LOOP_PARALLEL_ITERATIONS = 1

_GUIDED_METHODS = frozenset({"guided", "guided_smoothgrad"})
_KIND = {
    "vanilla": "gradient",
    "guided": "gradient",
    "smoothgrad": "smoothgrad",
    "guided_smoothgrad": "smoothgrad",
    "integrated_gradients": "integrated_gradients",
}


@dataclasses.dataclass(frozen=True, eq=False)
class Explanation:
    """Saliency for a batch: one gradient map, target and score per image."""

    gradients: np.ndarray  # float32 [B, H, W, C], d target logit / d model input
    targets: np.ndarray  # int64 [B]
    scores: np.ndarray  # float32 [B], the target logits
    method: str
    recomputed: int = 0  # maps that were non-finite in reduced precision, redone in fp32
    recomputed_rows: np.ndarray | None = None  # bool [B]: which rows were redone in fp32


# --------------------------------------------------------------------------- validation


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: got {value!r}; an integer >= {minimum} is required.")
    if value < minimum:
        raise ValueError(f"{name}: got {value!r}; it must be >= {minimum}. Fix: raise {name}.")
    return int(value)


def _check_method(method: Any) -> str:
    if method not in METHODS:
        raise ValueError(
            f"method: got {method!r}; allowed values are {list(METHODS)}. "
            "Fix: pick one of them (e.g. 'vanilla')."
        )
    return method


def _check_noise(noise: Any) -> float:
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real):
        raise TypeError(f"noise: got {noise!r}; a number >= 0 is required.")
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(
            f"noise: got {noise!r}; it must be a finite number >= 0 "
            "(a fraction of each input's max - min, 0.2 in the SmoothGrad paper)."
        )
    return float(noise)


def _check_baseline(baseline: Any) -> str | np.ndarray:
    if isinstance(baseline, str):
        if baseline != "zeros":
            raise ValueError(
                f"ig_baseline: got {baseline!r}; allowed are 'zeros' or a float scalar/array "
                "in model space. Fix: for 'black', pass the preprocessed image of 0 pixels "
                "(explain() does this when given a ModelSpec)."
            )
        return baseline
    try:
        array = np.asarray(baseline, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"ig_baseline: got {type(baseline).__name__}; 'zeros' or a float scalar/array "
            "is required."
        ) from error
    if not np.all(np.isfinite(array)):
        raise ValueError("ig_baseline: the baseline array has non-finite values.")
    if array.ndim > 3:
        raise ValueError(
            f"ig_baseline: got an array of shape {array.shape}; it must broadcast to one "
            "image [H, W, C] (a scalar, [C] or [H, W, C])."
        )
    return array


def _check_images(x: Any, name: str = "x") -> np.ndarray:
    array = np.asarray(x)
    if array.ndim != 4:
        raise ValueError(f"{name}: got shape {array.shape}; a batch [B, H, W, C] is required.")
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{name}: got dtype {array.dtype}; a numeric array is required.")
    return np.ascontiguousarray(array, dtype=np.float32)


def _check_index_vector(name: str, values: Any, batch: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim == 0:
        array = np.full([batch], array)
    if array.shape != (batch,):
        raise ValueError(
            f"{name}: got shape {array.shape}; one value per image ({batch},) is required."
        )
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name}: got dtype {array.dtype}; integers are required.")
    return array.astype(np.int64)


# --------------------------------------------------------------------------- seeds, targets


def image_seeds(x: np.ndarray, seed: int) -> np.ndarray:
    """Content-derived per-image noise seeds: blake2b(image float32 bytes, seed), uint64 [B].

    The same image (same float32 values and shape) gets the same seed in any batch and run.
    """
    _check_int("seed", seed, 0)
    images = _check_images(x)
    salt = int(seed).to_bytes(8, "little", signed=False)
    seeds = np.empty([images.shape[0]], dtype=np.uint64)
    for i, image in enumerate(images):
        digest = hashlib.blake2b(image.tobytes(), digest_size=8, key=salt)
        digest.update(repr(image.shape).encode())
        seeds[i] = np.frombuffer(digest.digest(), dtype="<u8")[0]
    return seeds


def resolve_targets(
    logits: Any,
    mode: str,
    *,
    labels: Any = None,
    classes: Any = None,
    k: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Which class to explain for each image.

    Returns (rows, targets), both int64 [M]: ``rows`` index into the batch. "predicted" is
    the argmax, "label" the given labels, "class" the given per-image classes (or one class
    for all), "top_k" the k best classes per image, each image repeated k times in rank order.
    """
    scores = np.asarray(logits)
    if scores.ndim != 2 or scores.shape[1] < 1:
        raise ValueError(f"logits: got shape {scores.shape}; [B, classes] is required.")
    batch, num_classes = scores.shape
    if mode not in TARGET_MODES:
        raise ValueError(
            f"target mode: got {mode!r}; allowed values are {list(TARGET_MODES)}. "
            "Fix: use 'predicted' to explain each image's top class."
        )
    k = _check_int("k", k, 1)
    rows = np.arange(batch, dtype=np.int64)
    if mode == "predicted":
        return rows, np.argmax(scores, axis=1).astype(np.int64)
    if mode == "top_k":
        if k > num_classes:
            raise ValueError(f"k: got {k}; the model has only {num_classes} classes.")
        # Stable sort on -logits: ties keep the lower class first.
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.repeat(rows, k), order.reshape(-1).astype(np.int64)
    name, given = ("labels", labels) if mode == "label" else ("classes", classes)
    if given is None:
        raise ValueError(f"target mode {mode!r} needs {name}=...; got None.")
    targets = _check_index_vector(name, given, batch)
    negative = np.flatnonzero(targets < 0)
    if negative.size:
        where = ", ".join(str(i) for i in negative[:20]) + (" ..." if negative.size > 20 else "")
        raise ValueError(
            f"{name}: images at positions [{where}] have no {name[:-1]} (value < 0). "
            "Fix: use target mode 'predicted' or provide a label for every image."
        )
    too_big = np.flatnonzero(targets >= num_classes)
    if too_big.size:
        raise ValueError(
            f"{name}: images at positions {too_big[:20].tolist()} have classes >= "
            f"{num_classes}, the model's number of classes."
        )
    return rows, targets


# --------------------------------------------------------------------------- graph pieces


def _target_gradient(
    model: keras.Model,
    inputs: tf.Tensor,
    targets: tf.Tensor,
    weight: tf.Tensor,
    loss_scale: float,
) -> tuple[tf.Tensor, tf.Tensor]:
    """d logit[target] / d inputs per row (rows are independent), and the target logits."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(inputs)
        logits = tf.cast(model(inputs, training=False), tf.float32)
        scores = tf.gather(logits, targets, axis=1, batch_dims=1)
        loss = tf.reduce_sum(scores * weight)
        if loss_scale != 1.0:
            loss = loss * loss_scale
    gradients = tape.gradient(loss, inputs)
    if loss_scale != 1.0:
        gradients = gradients / loss_scale
    return gradients, scores


def _standard_normal(shape: Sequence[int], seed: tf.Tensor) -> tf.Tensor:
    """N(0, 1) noise from Philox bits via Box-Muller, both branches used.

    TF's own float conversion of Philox bits differs between its kernels and XLA; the raw
    uint32 bits do not, so converting them here gives the same noise with or without XLA.
    One uint32 gives two 16-bit uniforms, and each pair of uniforms two independent normals
    (r cos t, r sin t): a quarter of the bits and half the log/sqrt of one 32-bit uniform per
    uniform and one branch per pair (noise went from ~9% to ~4% of a SmoothGrad step on
    CPU). 16 bits cut the tails at 4.86 sigma (std 0.9996), immaterial for input noise on
    8-bit images.
    """
    size = int(np.prod(shape))
    half = (size + 1) // 2
    bits = tf.random.stateless_uniform(
        [half], seed=seed, minval=None, maxval=None, dtype=tf.uint32, alg="philox"
    )
    # Each 16-bit uniform centred in its bin: u in (0, 1), never 0, so log(u) is finite.
    high = tf.cast(tf.bitwise.right_shift(bits, 16), tf.float32)
    low = tf.cast(tf.bitwise.bitwise_and(bits, 0xFFFF), tf.float32)
    radius = tf.sqrt(-2.0 * tf.math.log((high + 0.5) * 2.0**-16))
    angle = (2.0 * np.pi * 2.0**-16) * (low + 0.5)
    normal = tf.concat([radius * tf.cos(angle), radius * tf.sin(angle)], axis=0)
    return tf.reshape(normal[:size], shape)


def _sample_noise(seeds: tf.Tensor, samples: tf.Tensor, image_shape: Sequence[int]) -> tf.Tensor:
    """Standard normal noise [n, H, W, C]; row r depends only on (seeds[r], samples[r])."""
    pairs = tf.stack([seeds, tf.cast(samples, tf.int64)], axis=1)

    def one(pair: tf.Tensor) -> tf.Tensor:
        return _standard_normal(image_shape, pair)

    return tf.map_fn(one, pairs, fn_output_signature=tf.float32)


def _balanced_chunks(total: int, limit: int) -> tuple[int, int]:
    """(number of chunks, chunk size): the fewest chunks of at most ``limit`` inputs, sized
    evenly, so the padded last chunk wastes less than one input per chunk. (8 images x 50
    samples in chunks of at most 64: 7 chunks of 58, 406 inputs, not 7 of 64, 448.)"""
    chunks = -(-total // min(limit, total))
    return chunks, -(-total // chunks)


def _chunked_logits(model: keras.Model, x: tf.Tensor, chunk: int) -> tf.Tensor:
    """Forward pass over x in chunks of at most ``chunk`` images (static shapes)."""
    batch = int(x.shape[0])
    if batch <= chunk:
        return tf.cast(model(x, training=False), tf.float32)
    num_classes = int(model.outputs[0].shape[-1])
    chunks = -(-batch // chunk)

    def body(c: tf.Tensor, acc: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        index = tf.minimum(c * chunk + tf.range(chunk), batch - 1)
        logits = tf.cast(model(tf.gather(x, index), training=False), tf.float32)
        # Clamped duplicates write the same row twice; scatter_update keeps one copy.
        return c + 1, tf.tensor_scatter_nd_update(acc, index[:, None], logits)

    start = (tf.constant(0), tf.zeros([batch, num_classes], tf.float32))
    _, out = tf.while_loop(
        lambda c, acc: c < chunks,
        body,
        start,
        maximum_iterations=chunks,
        parallel_iterations=LOOP_PARALLEL_ITERATIONS,
    )
    return out


# --------------------------------------------------------------------------- BatchNorm folding


@keras.saving.register_keras_serializable(package="pipeline.saliency")
class FoldedBatchNormalization(keras.layers.Layer):
    """Stands in for a BatchNormalization folded into the convolution before it: identity."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        return inputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


_FOLDABLE_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)


def _foldable_pairs(model: keras.Model) -> dict[str, str]:
    """BatchNormalization name -> name of the linear convolution that alone feeds it."""
    outputs = {id(t) for t in model.outputs}
    pairs = {}
    for bn in model.layers:
        if type(bn) is not keras.layers.BatchNormalization or len(bn._inbound_nodes) != 1:
            continue
        inputs = bn._inbound_nodes[0].input_tensors
        if len(inputs) != 1 or id(inputs[0]) in outputs:
            continue
        conv = inputs[0]._keras_history.operation
        if (
            type(conv) not in _FOLDABLE_CONVOLUTIONS
            or len(conv._inbound_nodes) != 1
            or len(conv._outbound_nodes) != 1
            or conv.activation is not keras.activations.linear
            or conv.data_format != "channels_last"
            or bn.axis not in (-1, len(inputs[0].shape) - 1)
        ):
            continue
        pairs[bn.name] = conv.name
    return pairs


def _folded_weights(conv: keras.layers.Layer, bn: keras.layers.Layer) -> list[np.ndarray]:
    """Kernel and bias of ``bn(conv(x))`` as one convolution (inference statistics)."""
    kernel = np.asarray(conv.kernel, np.float64)
    # Output channels: Conv2D's last kernel axis; depthwise channel c, multiplier m -> c*M+m.
    depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
    out_shape = kernel.shape[-2:] if depthwise else kernel.shape[-1:]
    channels = int(np.prod(out_shape))
    gamma = np.asarray(bn.gamma, np.float64) if bn.scale else np.ones(channels)
    beta = np.asarray(bn.beta, np.float64) if bn.center else np.zeros(channels)
    mean = np.asarray(bn.moving_mean, np.float64)
    scale = gamma / np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)
    bias = np.asarray(conv.bias, np.float64) if conv.use_bias else np.zeros(channels)
    folded_kernel = kernel * scale.reshape(out_shape)
    return [folded_kernel.astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)]


def _fold_batchnorm(model: keras.Model) -> keras.Model:
    """An equivalent inference model with each BatchNormalization that follows a linear
    Conv2D / DepthwiseConv2D folded into that convolution's kernel and bias.

    Inference BatchNorm is a per-channel affine map, so ``bn(conv(x))`` is one convolution.
    Folding removes two elementwise passes from the forward pass and one from the backward
    (and, in reduced precision, BatchNorm's float32 round trip): MobileNetV2's input
    gradient got ~1.2x faster on CPU, ResNet50's ~1.06x. Returns ``model`` itself when
    nothing can be folded, the model cannot be cloned, or the clone's logits on random
    inputs differ from the original's by more than 1e-2 of their scale.
    """
    try:
        shape = tuple(model.inputs[0].shape[1:])
        if len(model.inputs) != 1 or any(d is None for d in shape):
            return model  # no probe input to check the fold with
        pairs = _foldable_pairs(model)
        if not pairs or any(
            keras.backend.standardize_dtype(layer.dtype_policy.compute_dtype) != "float32"
            for layer in model.layers
        ):
            return model
        folded = _clone_folded(model, pairs)
        probe = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
        expected = np.asarray(model(probe, training=False), np.float64)
        got = np.asarray(folded(probe, training=False), np.float64)
        # A wrong fold (channel order, axis) is off by the logits' own scale; float32
        # reassociation on random, out-of-distribution inputs stays below 1e-3 of it.
        if not np.all(np.abs(got - expected) <= 1e-2 * max(1.0, np.abs(expected).max())):
            return model
        return folded
    except Exception:  # noqa: BLE001 - an unusual graph keeps the original model
        return model


def _clone_folded(model: keras.Model, pairs: dict[str, str]) -> keras.Model:
    from keras.src.saving.serialization_lib import SafeModeScope

    from pipeline.guided import all_layers, plain_clone

    convolutions = {conv: bn for bn, conv in pairs.items()}

    def clone(op: Any) -> Any:
        if not isinstance(op, keras.layers.Layer):
            return op  # plain keras operations (adds, x + 3.0, ...) have no state
        if op.name in pairs:
            return FoldedBatchNormalization(name=op.name, dtype=op.dtype_policy.name)
        if op.name in convolutions:
            return plain_clone(op, use_bias=True)
        return plain_clone(op)

    # The model is already in memory (vetted when loaded): rebuilding its Lambda layers
    # from their configs is no new risk.
    with SafeModeScope(False):
        folded = keras.models.clone_model(model, clone_function=clone)
    originals = {layer.name: layer for layer in model.layers}
    for layer in folded.layers:
        source = originals.get(layer.name)
        if layer.name in pairs or (source is None and not layer.weights):
            continue  # folded away, or an input layer (renamed by the clone)
        if layer.name in convolutions:
            layer.set_weights(_folded_weights(source, originals[convolutions[layer.name]]))
        else:
            layer.set_weights(source.get_weights())
    for layer in all_layers(folded):
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()  # set_weights does not refresh Normalization's mean/var
    return folded


# --------------------------------------------------------------------------- Explainer


class Explainer:
    """Holds a logits model, its guided clone (built lazily, once) and one compiled
    function per (method, batch shape). Inputs are in model space (preprocessed)."""

    def __init__(
        self,
        model: keras.Model,
        *,
        samples: int = 50,
        noise: float = 0.2,
        seed: int = 0,
        precision: str = "float32",
        batch_size: int = 32,
        ig_steps: int = 32,
        ig_baseline: str | float | np.ndarray = "zeros",
        pad_to: int | None = None,
        xla: bool = False,
    ) -> None:
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"model: got {type(model).__name__}; a keras.Model with logits output is "
                "required (use explain() for a ModelSpec or a model name)."
            )
        try:
            outputs = list(model.outputs)
        except (AttributeError, ValueError) as error:
            raise ValueError(
                "model: it has no defined outputs; build it on a keras.Input first."
            ) from error
        if len(outputs) != 1 or len(outputs[0].shape) != 2:
            raise ValueError(
                "model: expected one logits output of shape [B, classes]; got "
                f"{[tuple(o.shape) for o in outputs]}."
            )
        self.samples = _check_int("samples", samples, 1)
        self.noise = _check_noise(noise)
        self.seed = _check_int("seed", seed, 0)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.ig_steps = _check_int("ig_steps", ig_steps, 1)
        self.ig_baseline = _check_baseline(ig_baseline)
        self.pad_to = None if pad_to is None else _check_int("pad_to", pad_to, 1)
        if not isinstance(xla, bool):
            raise TypeError(f"xla: got {xla!r}; True or False is required.")
        self.xla = xla
        self.precision = _resolve_precision(precision, model)
        self.num_classes = int(outputs[0].shape[-1])
        # Inference BatchNorm folded into the convolutions: the same function, fewer passes.
        model = _fold_batchnorm(model)
        self._models: dict[tuple[bool, str], keras.Model] = {(False, "float32"): model}
        self._functions: dict[tuple, Callable] = {}
        self._traces = 0
        self._guided_report = None  # guided.GuidedReport once the guided clone exists
        self._variant(guided=False, precision=self.precision)  # cast now: fail early

    # ---- models

    def _variant(self, *, guided: bool, precision: str) -> keras.Model:
        """The (guided?, precision) model, built on first use and kept."""
        key = (guided, precision)
        if key not in self._models:
            if guided and precision == "float32":
                from pipeline.guided import guided_model

                clone, report = guided_model(self._models[(False, "float32")])
                self._guided_report = report
                self._models[key] = clone
            else:
                from pipeline.precision import cast_model

                base = self._variant(guided=guided, precision="float32")
                self._models[key] = cast_model(base, precision)
        return self._models[key]

    def guided_report(self):
        """Build the guided clone now (once) and return its guided.GuidedReport."""
        self._variant(guided=True, precision="float32")
        return self._guided_report

    # ---- compiled functions

    def _function(self, kind: str, guided: bool, precision: str, shape: tuple) -> Callable:
        """The compiled function of one (kind, variant, precision, shape), built once.

        Built without AutoGraph: these bodies use explicit tf.while_loop, and AutoGraph
        never converts Keras layers' call (Keras is on its do-not-convert list), so
        converting only cost time: about 0.7 s of a run's first batch on MobileNetV2.
        """
        key = (kind, guided, precision, shape)
        if key not in self._functions:
            model = self._variant(guided=guided, precision=precision)
            loss_scale = FLOAT16_LOSS_SCALE if precision == "mixed_float16" else 1.0
            body = self._build_body(kind, model, shape, loss_scale)
            signature = [
                tf.TensorSpec(shape, tf.float32),  # x
                tf.TensorSpec(shape[:1], tf.int32),  # targets
                tf.TensorSpec(shape[:1], tf.int64),  # seeds (uint64 bits)
                tf.TensorSpec(shape[1:], tf.float32),  # IG baseline
            ]
            self._functions[key] = tf.function(
                body,
                input_signature=signature,
                jit_compile=self.xla or None,
                reduce_retracing=False,
                autograph=False,
            )
        return self._functions[key]

    def _build_body(self, kind: str, model: keras.Model, shape: tuple, loss_scale: float):
        batch = shape[0]
        image_shape = list(shape[1:])
        reps = {"gradient": 1, "smoothgrad": self.samples, "integrated_gradients": self.ig_steps}
        reps = reps.get(kind, 1)
        total = batch * reps
        chunks, chunk = _balanced_chunks(total, self.batch_size)
        noise = self.noise

        def run(x, targets, seeds, baseline):
            self._traces += 1  # runs only while tracing
            if kind == "logits":
                return _chunked_logits(model, x, chunk), tf.zeros([batch], tf.float32)
            if kind == "gradient" and total <= chunk:
                # One chunk holds the batch: no loop, gather, mask or segment sum, so the
                # graph is the plain batched gradient (the reference it is benchmarked on).
                return _target_gradient(model, x, targets, tf.ones([batch]), loss_scale)
            sigma = noise * (tf.reduce_max(x, axis=[1, 2, 3]) - tf.reduce_min(x, axis=[1, 2, 3]))

            def body(c, grad_sum, score_sum):
                flat = c * chunk + tf.range(chunk)
                valid = flat < total
                flat = tf.minimum(flat, total - 1)  # the last chunk: masked copies
                rows, step = flat // reps, flat % reps
                images = tf.gather(x, rows)
                if kind == "smoothgrad":
                    eps = _sample_noise(tf.gather(seeds, rows), step, image_shape)
                    inputs = images + tf.gather(sigma, rows)[:, None, None, None] * eps
                elif kind == "integrated_gradients":
                    alpha = (tf.cast(step, tf.float32) + 0.5) / reps  # midpoint rule
                    inputs = baseline + alpha[:, None, None, None] * (images - baseline)
                else:
                    inputs = images
                weight = tf.cast(valid, tf.float32)
                grads, scores = _target_gradient(
                    model, inputs, tf.gather(targets, rows), weight, loss_scale
                )
                grads = tf.where(valid[:, None, None, None], grads, 0.0)
                grad_sum += tf.math.unsorted_segment_sum(grads, rows, batch)
                score_sum += tf.math.unsorted_segment_sum(tf.where(valid, scores, 0.0), rows, batch)
                return c + 1, grad_sum, score_sum

            start = (
                tf.constant(0),
                tf.zeros(shape, tf.float32),
                tf.zeros([batch], tf.float32),
            )
            _, grads, scores = tf.while_loop(
                lambda c, g, s: c < chunks,
                body,
                start,
                maximum_iterations=chunks,
                parallel_iterations=LOOP_PARALLEL_ITERATIONS,
            )
            if kind == "gradient":
                return grads, scores
            grads = grads / reps
            if kind == "integrated_gradients":
                grads = grads * (x - baseline)
            logits = _chunked_logits(model, x, min(self.batch_size, batch))
            return grads, tf.gather(logits, targets, axis=1, batch_dims=1)

        return run

    def _call(self, kind: str, guided: bool, precision: str, x, targets, seeds, baseline):
        fn = self._function(kind, guided, precision, tuple(x.shape))
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
        images = _check_images(x)
        out = []
        for start, stop in self._pieces(images.shape[0]):
            piece = self._padded(images[start:stop], stop - start)
            n = piece.shape[0]
            args = (piece, np.zeros([n], np.int32), np.zeros([n], np.int64))
            args += (np.zeros(piece.shape[1:], np.float32),)
            logits, _ = self._call("logits", False, self.precision, *args)
            if self.precision != "float32" and not np.all(np.isfinite(logits)):
                exact, _ = self._call("logits", False, "float32", *args)
                bad = ~np.all(np.isfinite(logits), axis=1)
                logits[bad] = exact[bad]
            out.append(logits[: stop - start])
        if not out:
            return np.zeros([0, self.num_classes], np.float32)
        return np.concatenate(out, axis=0)

    def explain(
        self, x: np.ndarray, method: str, *, targets: Any, seeds: Any = None
    ) -> Explanation:
        """Saliency of ``targets`` (int [B]) for images x [B, H, W, C] in model space.

        ``seeds`` (uint64 [B]) seed the SmoothGrad noise per image; by default they are
        derived from the image content and the Explainer's seed (see ``image_seeds``).
        """
        method = _check_method(method)
        images = _check_images(x)
        batch = images.shape[0]
        target_array = _check_index_vector("targets", targets, batch)
        if target_array.size and (target_array.min() < 0 or target_array.max() >= self.num_classes):
            raise ValueError(
                f"targets: got values in [{target_array.min()}, {target_array.max()}]; they "
                f"must be class indices in [0, {self.num_classes})."
            )
        kind, guided = _KIND[method], method in _GUIDED_METHODS
        if seeds is not None:
            seed_array = np.asarray(seeds)
        elif kind == "smoothgrad":
            seed_array = image_seeds(images, self.seed)
        else:  # no noise is drawn: skip hashing the images (~4% of a vanilla call on CPU)
            seed_array = np.zeros([batch], np.uint64)
        if seed_array.shape != (batch,) or not np.issubdtype(seed_array.dtype, np.integer):
            raise ValueError(f"seeds: got {seed_array.shape} {seed_array.dtype}; uint64 [B].")
        seed_bits = seed_array.astype(np.uint64).view(np.int64)
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
            g, s = self._call(kind, guided, self.precision, *args)
            if self.precision != "float32":
                bad = ~(np.all(np.isfinite(g), axis=(1, 2, 3)) & np.isfinite(s))
                bad[size:] = False  # padding rows repeat a real one
                if bad.any():
                    exact_g, exact_s = self._call(kind, guided, "float32", *args)
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
        )

    def trace_count(self) -> int:
        """How many times any of this Explainer's tf.functions traced."""
        return self._traces


def _joined(pieces: list[np.ndarray], empty_shape: tuple) -> np.ndarray:
    """Concatenate float32 pieces; a single piece is returned as it is (no copy)."""
    if not pieces:
        return np.zeros(empty_shape, np.float32)
    joined = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    return joined.astype(np.float32, copy=False)


def _resolve_precision(name: Any, model: keras.Model) -> str:
    from pipeline.precision import PRECISIONS, resolve_precision

    if name not in PRECISIONS:
        raise ValueError(
            f"precision: got {name!r}; allowed values are {list(PRECISIONS)}. "
            "Fix: use 'float32' (exact) or 'auto' (reduced precision where the device has it)."
        )
    return resolve_precision(name, model)


# --------------------------------------------------------------------------- one-shot API


def explain(
    model: Any,
    images: Any,
    method: str,
    *,
    targets: Any = None,
    samples: int = 50,
    noise: float = 0.2,
    seed: int = 0,
    precision: str = "float32",
    batch_size: int = 32,
    ig_steps: int = 32,
    ig_baseline: str | float | np.ndarray = "zeros",
) -> Explanation:
    """Explain a batch in one call.

    ``model`` is a keras.Model (logits output; images are fed as they are, in model space),
    or a ``models.ModelSpec`` or a model name/path (then the model is loaded, images are raw
    pixels 0..255 [B, H, W, C] at its input size, and its preprocessing is applied).
    ``targets`` None explains each image's predicted class. ``ig_baseline`` "black" (the
    preprocessed image of 0 pixels) needs a ModelSpec or name.
    """
    method = _check_method(method)
    if isinstance(model, keras.Model):
        x = _check_images(images, "images")
        if isinstance(ig_baseline, str) and ig_baseline == "black":
            raise ValueError(
                "ig_baseline: 'black' needs the model's preprocessing; for a keras.Model pass "
                "the preprocessed black image as an array, or pass a ModelSpec."
            )
        keras_model = model
    else:
        keras_model, x, ig_baseline = _load_and_preprocess(model, images, ig_baseline)
    explainer = Explainer(
        keras_model,
        samples=samples,
        noise=noise,
        seed=seed,
        precision=precision,
        batch_size=batch_size,
        ig_steps=ig_steps,
        ig_baseline=ig_baseline,
    )
    if targets is None:
        _, targets = resolve_targets(explainer.logits(x), "predicted")
    return explainer.explain(x, method, targets=targets)


def _load_and_preprocess(spec: Any, images: Any, ig_baseline: Any):
    from pipeline.models import ModelSpec, load_model

    if isinstance(spec, str):
        spec = ModelSpec(name=spec)
    if not isinstance(spec, ModelSpec):
        raise TypeError(
            f"model: got {type(spec).__name__}; a keras.Model, a models.ModelSpec or a model "
            "name/path is required."
        )
    loaded = load_model(spec)
    pixels = _check_images(images, "images")
    expected = (*loaded.input_size, loaded.channels)
    if pixels.shape[1:] != expected:
        raise ValueError(
            f"images: got shape {pixels.shape}; raw pixels [B, {expected[0]}, {expected[1]}, "
            f"{expected[2]}] at the model's input size are required. Fix: resize first."
        )
    x = np.asarray(loaded.preprocess(pixels), dtype=np.float32)
    if isinstance(ig_baseline, str) and ig_baseline == "black":
        ig_baseline = loaded.black_image()
    return loaded.model, x, ig_baseline
