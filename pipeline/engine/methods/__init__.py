"""One module per saliency method, and the chunked sample loop they share.

Each method is a graph function of (model, x, targets, ...) -> (gradients, target logits),
called inside the Explainer's compiled ``tf.function``; none keeps state.
"""
