"""The same job on a local dir, on s3:// (moto's server) and on gs:// (gcp-storage-emulator),
all on 127.0.0.1; and Beam's S3 file operations as Beam 2.77 does them against ours.

    python -m benchmarks.stores_bench [--repeats 3] [--ops 40] [--json out.json]

- job: ``python -m pipeline run --config configs/local.yaml`` (12 bundled images, vanilla +
  guided + SmoothGrad-50, PNG views, the audit off) with source.pattern and output.dir on
  the store (inputs uploaded first, untimed), each run in a fresh process into a fresh
  output dir, timed around the process; the runs of the three stores are interleaved.
  Ratio = store seconds / local seconds, per round, median.
- S3 file operations: ``--ops`` rounds of (write a 2 KiB object, exists, read it back,
  write an empty object) through ``FileSystems`` in a fresh process, once with Beam as it is
  and once with pipeline.store.object_stores installed (the shared client, one PutObject per
  small object). Beam as it is cannot write the empty object (apache/beam#21369): its
  errors are counted and the failed write is then skipped.
- first gs:// access: a fresh process answers FileSystems.exists on the emulator, Beam as it
  is (its credential lookup retries for ~20 s before going anonymous) and with ours.

The servers run on this machine: network latency is ~0, so these are the client-side
costs (client construction, requests per object), not a cloud store's.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import common
from pipeline.testing.stores import gcs_server, s3_server

_OPS = r"""
import sys, time
patched = sys.argv[1] == "ours"
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
FileSystems.set_options(PipelineOptions(sys.argv[3:]))
if patched:
    from pipeline.store import object_stores
    object_stores.install()
n, errors = int(sys.argv[2]), 0
start = time.perf_counter()
for i in range(n):
    path = f"s3://saliency-test/ops-{sys.argv[1]}/{i}.bin"
    with FileSystems.create(path) as f:
        f.write(b"x" * 2048)
    FileSystems.exists(path)
    with FileSystems.open(path) as f:
        f.read()
    try:
        with FileSystems.create(path + ".empty") as f:
            pass
    except Exception:
        errors += 1
print(time.perf_counter() - start, errors)
"""

_FIRST = r"""
import sys, time
start = time.perf_counter()
if sys.argv[1] == "ours":
    import pipeline.store.files  # installs the fixes
from apache_beam.io.filesystems import FileSystems
FileSystems.exists(sys.argv[2])
print(time.perf_counter() - start)
"""


def _first_access(store, which: str) -> float:
    """Seconds to the first gs:// answer in a fresh process (Beam's credential lookup)."""
    proc = subprocess.run(
        [sys.executable, "-c", _FIRST, which, store.url("in/circle_01.jpg")],
        cwd=common.ROOT, env=dict(os.environ, **store.env), capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return float(proc.stdout.split()[-1])


def _job(store, out: str, pattern: str) -> float:
    sets = [f"source.pattern={pattern}", f"output.dir={out}", "audit.enabled=false"]
    sets += store.overrides if store else []
    args = [a for s in sets for a in ("--set", s)]
    env = dict(os.environ, **(store.env if store else {}))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "-q", "--config", "configs/local.yaml", *args],
        cwd=common.ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return elapsed


def _ops(store, which: str, n: int) -> tuple[float, int]:
    flags = [f"--{o.removeprefix('beam.')}" for o in store.overrides]
    proc = subprocess.run(
        [sys.executable, "-c", _OPS, which, str(n), *flags],
        cwd=common.ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    seconds, errors = proc.stdout.split()
    return float(seconds), int(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ops", type=int, default=40)
    parser.add_argument("--json")
    args = parser.parse_args()
    images = sorted(glob.glob(str(common.ROOT / "examples/images/*_*.*")))  # the 12 jpg / png
    rounds: list[dict[str, float]] = []
    with s3_server() as s3, gcs_server() as gcs, tempfile.TemporaryDirectory() as tmp:
        stores = {"s3": s3, "gs": gcs}
        for store in stores.values():
            for path in images:
                store.put(f"in/{os.path.basename(path)}", Path(path).read_bytes())
        for r in range(args.repeats):
            row = {"local": _job(None, f"{tmp}/local{r}", "examples/images/*")}
            for name, store in stores.items():
                row[name] = _job(store, store.url(f"out{r}"), store.url("in/*"))
            common.log(f"round {r}: " + ", ".join(f"{k} {v:.1f} s" for k, v in row.items()))
            rounds.append(row)
        ops = {which: _ops(s3, which, args.ops) for which in ("beam", "ours")}
        first = {which: _first_access(gcs, which) for which in ("beam", "ours")}
    median = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    ratios = {k: statistics.median(r[k] / r["local"] for r in rounds) for k in ("s3", "gs")}
    result = {
        "machine": common.machine(),
        "versions": common.versions(),
        "images": len(images),
        "rounds": rounds,
        "median_s": median,
        "ratio_to_local": ratios,
        "s3_ops": {
            "rounds": args.ops,
            "beam_s": ops["beam"][0],
            "beam_empty_write_errors": ops["beam"][1],
            "ours_s": ops["ours"][0],
            "ours_empty_write_errors": ops["ours"][1],
            "speedup": ops["beam"][0] / ops["ours"][0],
        },
        "gcs_first_access_s": first,
    }
    print(common.markdown_table(
        ["store", "median s", "x local"],
        [[k, f"{v:.1f}", f"{ratios.get(k, 1.0):.2f}"] for k, v in median.items()],
    ))  # fmt: skip
    o = result["s3_ops"]
    print(f"S3 ops x{args.ops}: Beam {o['beam_s']:.2f} s ({o['beam_empty_write_errors']} empty "
          f"writes failed), ours {o['ours_s']:.2f} s ({o['ours_empty_write_errors']} failed): "
          f"{o['speedup']:.1f}x")  # fmt: skip
    print(f"first gs:// access in a fresh process: Beam {first['beam']:.1f} s, "
          f"ours {first['ours']:.1f} s")  # fmt: skip
    common.dump_json(result, args.json)


if __name__ == "__main__":
    main()
