"""The Beam and Python versions of the launcher and of the worker image, stated once.

setup.py pins apache-beam to BEAM_VERSION (read from this file), the Dockerfile's ARG
defaults are these (tests/test_dataflow.py checks), and the worker image is tagged
WORKER_TAG. On Dataflow the launcher and the workers must run the same Beam and Python:
the launcher refuses an image whose tag says otherwise (pipeline/beam/dataflow.py).
"""

BEAM_VERSION = "2.77.0"
PYTHON_VERSION = "3.11"
WORKER_TAG = f"beam{BEAM_VERSION}-py{PYTHON_VERSION}"
