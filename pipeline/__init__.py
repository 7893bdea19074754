"""Dataset-scale saliency maps for Keras image classifiers, as an Apache Beam batch job.

Rooms (imports run one way: beam -> audit -> store -> maps; beam -> engine; all may use
choices, elements and config): ``engine`` (TF/Keras only: ``from pipeline.engine.api
import explain``), ``maps`` (numpy + Pillow views and PNGs), ``store`` (output.dir layout,
files, records, listing, decoding), ``beam`` (sources, the model handler, sinks, the
``ExplainImages`` PTransform, the run), ``audit`` (dataset audits).
"""

__version__ = "0.1.0"
