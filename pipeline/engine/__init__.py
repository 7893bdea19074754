"""The saliency engine: TensorFlow / Keras only (never Beam).

``from pipeline.engine.api import explain`` for one call; ``engine.explainer.Explainer``
for a persistent object; ``engine.models`` loads classifiers by name or path.
"""
