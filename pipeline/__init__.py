"""Dataset-scale saliency maps for Keras image classifiers, as an Apache Beam batch job.

The engine (models, guided, precision, saliency, maps) is plain TensorFlow/Keras and can be
used on its own: ``from pipeline.saliency import explain``.
"""

__version__ = "0.1.0"
