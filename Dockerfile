# Worker image for Dataflow / Flink GPU workers (and a self-contained launcher).
#   docker build -t $REGION-docker.pkg.dev/$PROJECT/saliency/worker:beam2.77.0-py3.11 .
#   docker push $REGION-docker.pkg.dev/$PROJECT/saliency/worker:beam2.77.0-py3.11
# The tag states the image's Beam and Python: the launcher refuses an image whose tag
# differs from its own (Dataflow fails such a job on the workers). The ARG defaults below
# are pipeline/versions.py's (tests/test_dataflow.py checks); change the versions there.
# The Beam SDK image brings the boot entrypoint and a Python matching the SDK; TensorFlow's
# CUDA libraries come from pip (tensorflow[and-cuda]), so no CUDA base image is needed.
# The host (Dataflow: install-nvidia-driver) provides the NVIDIA driver.
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    TF_FORCE_GPU_ALLOW_GROWTH=true

WORKDIR /opt/saliency
# Dependencies first so code edits do not invalidate the heavy layer.
# constraints.txt pins every version CI tested, so two builds resolve the same.
COPY setup.py pyproject.toml README.md constraints.txt ./
COPY pipeline/__init__.py pipeline/__init__.py
COPY pipeline/versions.py pipeline/versions.py
RUN pip install --upgrade pip \
 && pip install -c constraints.txt ".[gpu,gcp,aws]" \
 && pip uninstall -y saliency-pipeline
COPY pipeline pipeline
COPY configs configs
COPY examples examples
RUN pip install --no-deps . \
 && python -c "import pipeline.engine.api, pipeline.beam.run"

# Beam's boot program starts the SDK harness (Dataflow, Flink --environment_type=DOCKER,
# or `--worker_pool` for an EXTERNAL worker pool).
ENTRYPOINT ["/opt/apache/beam/boot"]
