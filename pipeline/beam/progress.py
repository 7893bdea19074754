"""Progress of a run: a bar on a terminal, log lines elsewhere, Beam counters always.

The launcher ``configure``s the process-wide reporter before the pipeline runs. Workers
that run in the launcher's process (DirectRunner in memory) then drive its bar or its log
lines; workers in other processes (multi_processing, Dataflow, Flink) find it unconfigured
and log every ``every`` images themselves. The Beam counters (namespace "saliency":
images_done, images_failed, images_skipped, maps_recomputed) reach Dataflow's UI too.
"""

import logging
import shutil
import threading
import time
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from tqdm import tqdm

_LOG = logging.getLogger("pipeline.progress")
NAMESPACE = "saliency"


class Progress:
    """Counts images done / failed / skipped; shows a bar or logs every ``every`` images."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset(total=None, bar=False, every=0)
        self.configured = False

    def reset(self, *, total: int | None, bar: bool, every: int, stream: Any = None) -> None:
        """Start counting for a new run (closes a previous bar)."""
        with self._lock:
            if getattr(self, "_bar", None) is not None:
                self._bar.close()
            self.total, self.every = total, max(0, int(every))
            self.done = self.failed = self.skipped = 0
            self._started = time.monotonic()
            self._logged = 0
            size = shutil.get_terminal_size()
            self._bar = (
                # A terminal that reports a 0 x 0 size (a bare pty) gets 80 x 24, not an
                # empty bar (tqdm draws nothing below its row count).
                tqdm(total=total, unit="img", desc="explaining", file=stream, leave=True,
                     ncols=size.columns, nrows=size.lines, smoothing=0.1)
                if bar
                else None
            )  # fmt: skip
            self.configured = True

    def advance(self, *, done: int = 0, failed: int = 0, skipped: int = 0) -> None:
        """Count images that finished (explained, failed or skipped)."""
        with self._lock:
            self.done += done
            self.failed += failed
            self.skipped += skipped
            finished = self.done + self.failed + self.skipped
            if self._bar is not None:
                self._bar.set_postfix_str(f"{self.failed} failed", refresh=False)
                self._bar.update(done + failed + skipped)
                return
            if not self.every or finished - self._logged < self.every:
                return
            self._logged = finished
            line = self._line(finished)
        _LOG.info("%s", line)

    def _line(self, finished: int) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = self.done / elapsed
        of = f"/{self.total}" if self.total is not None else ""
        eta = ""
        if self.total is not None and rate > 0:
            eta = f", ETA {max(self.total - finished, 0) / max(finished / elapsed, 1e-9):.0f} s"
        return (
            f"progress: {finished}{of} images ({self.done} explained, {self.failed} failed, "
            f"{self.skipped} skipped), {rate:.1f} images/s{eta}"
        )

    def close(self) -> None:
        """Finish the bar (the run is over)."""
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            self.configured = False


REPORTER = Progress()


class Counters:
    """The Beam counters of one worker stage (created on the worker, not pickled)."""

    def __init__(self) -> None:
        self.done = Metrics.counter(NAMESPACE, "images_done")
        self.failed = Metrics.counter(NAMESPACE, "images_failed")
        self.skipped = Metrics.counter(NAMESPACE, "images_skipped")
        self.recomputed = Metrics.counter(NAMESPACE, "maps_recomputed")


def report(counters: Counters, *, done: int = 0, failed: int = 0, skipped: int = 0) -> None:
    """Count on Beam's counters and on this process's reporter (bar or log lines)."""
    counts = ((counters.done, done), (counters.failed, failed), (counters.skipped, skipped))
    for counter, n in counts:
        if n:
            counter.inc(n)
    REPORTER.advance(done=done, failed=failed, skipped=skipped)


class _CountFn(beam.DoFn):
    """Counts each element as a failed or skipped image; emits nothing."""

    def __init__(self, kind: str) -> None:
        self._kind = kind

    def setup(self) -> None:
        self._counters = Counters()

    def process(self, element: Any):
        report(self._counters, **{self._kind: 1})
        return ()


class ReportProgress(beam.PTransform):
    """Counts a PCollection's elements as ``failed`` or ``skipped`` images (progress only)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind not in ("failed", "skipped"):
            raise ValueError(f"kind={kind!r}: use 'failed' or 'skipped'.")
        self._kind = kind

    def expand(self, pcoll):
        return pcoll | "Count" >> beam.ParDo(_CountFn(self._kind))
