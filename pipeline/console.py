"""What a person sees on the terminal: log levels, library noise, native banners.

By default stderr holds the project's own lines only: library loggers (Beam, TensorFlow,
absl) are raised to WARNING, a filter drops the notices they print on every run (Beam's
"Resource module is not available", "apitools not found", string type-hint conversions,
discarded-args warnings, which the CLI's own flag check replaces) and TensorFlow's native
start-up banners (oneDNN, absl's pre-init notice) are kept off the terminal while it loads.
``-v`` shows INFO of every library, ``--log-level`` sets it exactly, ``-q`` errors only.
"""

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

PROJECT_LOGGER = "pipeline"
LIBRARY_LOGGERS = ("apache_beam", "tensorflow", "absl", "keras", "h5py", "urllib3", "google")
LEVELS = ("debug", "info", "warning", "error")
# Notices printed by libraries on every run that tell a user nothing they can act on.
NOISE = (
    "Resource module is not available",
    "apitools not found",
    "Converting string literal type hint",
    "Discarding unparseable args",
    "Discarding invalid overrides",
    "No module named google.cloud.bigquery_storage_v1",
    "min_shards undef",
    "Creating state cache",
    "BatchElements statistics",
    "Renamed 1 shards",
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in NOISE)


def setup_logging(*, quiet: bool = False, verbose: bool = False, level: str | None = None) -> int:
    """Configure the root handler for a CLI run; returns the project's level."""
    if level is not None:
        project = libraries = getattr(logging, level.upper())
    elif quiet:
        project = libraries = logging.ERROR
    elif verbose:
        project, libraries = logging.DEBUG, logging.INFO
    else:
        project, libraries = logging.INFO, logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if not verbose and level is None:
        handler.addFilter(_DropNoise())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(libraries)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(libraries)
    logging.getLogger(PROJECT_LOGGER).setLevel(project)
    # TensorFlow's C++ logging: 3 hides INFO, WARNING and ERROR banners (errors still raise).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "3")
    return project


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool = True) -> Iterator[None]:
    """Send file descriptor 2 to /dev/null while a native library loads (TensorFlow prints
    its oneDNN and absl banners from C++ before any Python setting can reach them).
    Python exceptions still propagate and are reported after stderr is restored."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_WARNED: set[tuple[str, str]] = set()  # (logger, message) already warned in this process


def warn_once(logger: logging.Logger, message: str) -> None:
    """Log ``message`` as a warning the first time this process says it on ``logger``."""
    if (logger.name, message) not in _WARNED:
        _WARNED.add((logger.name, message))
        logger.warning("%s", message)
