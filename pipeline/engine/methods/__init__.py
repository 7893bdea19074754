"""One module per saliency computation, the chunked sample loop they share, and the
registry that maps choices.METHOD_TABLE's computations to them.

A gradient method is a Path (methods.loop): the model inputs it makes per image and how
their gradients combine; SmoothGrad wraps any Path in a noise tunnel. All run inside the
Explainer's compiled ``tf.function``; none keeps state.
"""
