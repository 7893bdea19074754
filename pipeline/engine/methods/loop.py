"""The chunked sample loop every gradient method runs in, and its Path.

Samples (or steps) are flattened to ``B * reps`` model inputs and run in chunks of at most
``chunk_limit`` inputs inside one ``tf.while_loop``, one chunk at a time; per-image sums are
accumulated with ``unsorted_segment_sum``. The chunks are sized evenly (the fewest chunks
of at most ``chunk_limit``), and the last one is padded with masked copies, so every chunk
has the same static shape and little work is wasted.
"""

import dataclasses
from collections.abc import Callable

import keras
import tensorflow as tf

# Chunks of the sample loop run one after another: with TF's default (10 in flight) a
# SmoothGrad call held several chunks' activations at once (7.6 GB peak RSS for chunks of 64
# MobileNetV2 224 inputs, 2.4 GB with one in flight) and gained no speed; on a GPU one chunk
# already fills the device, and memory is what bounds the chunk size.
LOOP_PARALLEL_ITERATIONS = 1

# (images [n, H, W, C], image rows [n], sample index [n]) -> (model inputs [n, H, W, C],
# their gradient weight, broadcastable to the inputs, or None for 1)
MakeInputs = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor | None]]


def balanced_chunks(total: int, limit: int) -> tuple[int, int]:
    """(number of chunks, chunk size): the fewest chunks of at most ``limit`` inputs, sized
    evenly, so the padded last chunk wastes less than one input per chunk. (8 images x 50
    samples in chunks of at most 64: 7 chunks of 58, 406 inputs, not 7 of 64, 448.)"""
    chunks = -(-total // min(limit, total))
    return chunks, -(-total // chunks)


def _below(limit: int) -> Callable[..., tf.Tensor]:
    def condition(c: tf.Tensor, *state: tf.Tensor) -> tf.Tensor:
        return c < limit

    return condition


def chunked_logits(model: keras.Model, x: tf.Tensor, chunk: int) -> tf.Tensor:
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
        _below(chunks),
        body,
        start,
        maximum_iterations=chunks,
        parallel_iterations=LOOP_PARALLEL_ITERATIONS,
    )
    return out


def target_logits(model: keras.Model, x: tf.Tensor, targets: tf.Tensor, chunk: int) -> tf.Tensor:
    """The target logit of each image of x, from a chunked forward pass."""
    logits = chunked_logits(model, x, min(chunk, int(x.shape[0])))
    return tf.gather(logits, targets, axis=1, batch_dims=1)


@dataclasses.dataclass(frozen=True)
class Path:
    """A gradient method as ``reps`` model inputs per image: its map is the mean over them of
    (gradient x per-input weight), times a per-image ``row_weight`` of the image.

    ``make(images, rows, step)`` returns the chunk's model inputs and their gradient weight
    (None: 1); ``row_weight(x)`` (None: 1) multiplies the mean (integrated gradients' x - b).
    Wrappers (SmoothGrad's noise tunnel) build a new Path from an inner one.
    """

    reps: int
    make: MakeInputs
    row_weight: Callable[[tf.Tensor], tf.Tensor] | None = None


def sample_loop(
    model: keras.Model,
    x: tf.Tensor,
    targets: tf.Tensor,
    path: Path,
    *,
    chunk_limit: int,
    gradient_fn: Callable[..., tuple[tf.Tensor, tf.Tensor]],
    loss_scale: float,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Sums over ``path.reps`` model inputs per image of (weighted gradient, target logit).

    ``gradient_fn`` is ``gradient.target_gradient`` (passed in, so this module does not
    import a method).
    """
    shape = x.shape
    batch = int(shape[0])
    reps = path.reps
    total = batch * reps
    chunks, chunk = balanced_chunks(total, chunk_limit)

    def body(c: tf.Tensor, grad_sum: tf.Tensor, score_sum: tf.Tensor):
        flat = c * chunk + tf.range(chunk)
        valid = flat < total
        flat = tf.minimum(flat, total - 1)  # the last chunk: masked copies
        rows, step = flat // reps, flat % reps
        inputs, weight = path.make(tf.gather(x, rows), rows, step)
        mask = tf.cast(valid, tf.float32)
        grads, scores = gradient_fn(model, inputs, tf.gather(targets, rows), mask, loss_scale)
        if weight is not None:
            grads = grads * weight
        grads = tf.where(valid[:, None, None, None], grads, 0.0)
        grad_sum += tf.math.unsorted_segment_sum(grads, rows, batch)
        score_sum += tf.math.unsorted_segment_sum(tf.where(valid, scores, 0.0), rows, batch)
        return c + 1, grad_sum, score_sum

    start = (tf.constant(0), tf.zeros(shape, tf.float32), tf.zeros([batch], tf.float32))
    _, grads, scores = tf.while_loop(
        _below(chunks),
        body,
        start,
        maximum_iterations=chunks,
        parallel_iterations=LOOP_PARALLEL_ITERATIONS,
    )
    return grads, scores
