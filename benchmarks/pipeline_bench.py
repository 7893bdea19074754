"""End-to-end pipeline against the model-only loop; memory growth; time to first result.

    python -m benchmarks.pipeline_bench [--images 96] [--method smoothgrad] [--batch 8]

- Workload: N copies of the bundled photos (examples/photos) and a random-weight,
  BatchNorm-calibrated MobileNetV2 224x224 saved as a .keras file (symmetric preprocessing),
  explained for its predicted class with one method, float32, batches of ``--batch``.
- model-only loop, in a fresh process with TensorFlow imported: the images decoded and
  resized in memory (untimed), then, timed from the model load: load the .keras file, build
  the handler's Explainer, and per batch what the handler does (preprocess, logits,
  Explainer.explain). Its first batch traces; "steady" is the rate of the later batches.
- end-to-end: ``pipeline.beam.run.run(config)`` with the DirectRunner in a fresh process with
  TensorFlow and Beam imported, timed around that call (files read -> every output
  written: records, PNG artifacts, manifest, summary). Ratio = pipeline images/s /
  model-only images/s: both load the model, fold it and trace once, so the difference is
  the pipeline's own work (target >= 0.9, overhead <= 10%). The steady-state ratio
  (against the loop without its load and first batch) is reported beside it.
- memory: the same pipeline (vanilla) on M and 10 M images, each in its own process; the
  peak RSS of each child is its VmHWM (ru_maxrss would include the forking parent's).
- first result: ``python -m pipeline run --config configs/local.yaml``; the time from the
  process start until the first final output file (a PNG artifact, a record shard, the
  manifest) appears under the output directory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


import numpy as np

from benchmarks import common
from benchmarks.pipeline_workload import make_workspace, write_config

PYTHON = sys.executable


# --------------------------------------------------------------------------- model-only


def _child_model_only(config_path: str, result_path: str) -> None:
    """In a fresh process: the handler's work without Beam, timed from the model load.

    The images are decoded and resized before the clock starts (decoding is pipeline
    work). Then, timed: load the model file, build the Explainer, and per batch what the
    handler does (preprocess, logits, Explainer.explain). The first batch traces.
    """
    from pipeline.beam.handler import make_explainer
    from pipeline.config.files import load_config
    from pipeline.engine.from_config import model_spec
    from pipeline.engine.models import load_model
    from pipeline.engine.targets import resolve_targets
    from pipeline.store.decode import decode_image, resize

    config = load_config(config_path)
    paths = sorted(Path(config.source.pattern).parent.iterdir())
    cpu_started = _cpu_s()
    started = time.perf_counter()
    loaded = load_model(model_spec(config.model))
    explainer = make_explainer(loaded, config.saliency, pad_to=config.batch.max_batch_size)
    load_s = time.perf_counter() - started
    pixels = []
    decode_started, decode_cpu_started = time.perf_counter(), _cpu_s()
    for path in paths:
        decoded = decode_image(
            path.read_bytes(), channels=loaded.channels, max_pixels=config.source.max_pixels
        )
        pixels.append(resize(decoded, tuple(loaded.input_size), config.source.resize))
    pixels = np.stack(pixels)
    decode_s = time.perf_counter() - decode_started
    decode_cpu_s = _cpu_s() - decode_cpu_started
    batch = config.batch.max_batch_size
    batch_s = []
    for start in range(0, len(pixels), batch):
        batch_started = time.perf_counter()
        x = np.asarray(
            loaded.preprocess(pixels[start : start + batch].astype(np.float32)), dtype=np.float32
        )
        rows, targets = resolve_targets(explainer.logits(x), "predicted")
        for method in config.saliency.methods:
            explainer.explain(x[rows], method, targets=targets)
        batch_s.append(time.perf_counter() - batch_started)
    cold_s = time.perf_counter() - started - decode_s
    steady = batch_s[1:] or batch_s
    steady_images = len(pixels) - batch if len(batch_s) > 1 else len(pixels)
    Path(result_path).write_text(
        json.dumps(
            {
                "images": len(pixels),
                "load_s": load_s,
                "first_batch_s": batch_s[0],
                "cold_s": cold_s,
                "cold_cpu_s": _cpu_s() - cpu_started - decode_cpu_s,
                "decode_s": decode_s,
                "images_per_s": len(pixels) / cold_s,
                "steady_images_per_s": steady_images / sum(steady),
                "vm_hwm_mib": vm_hwm_mib(),
            }
        )
    )


def model_only(config_path: Path, work: Path) -> dict[str, Any]:
    """The model-only loop in a fresh process (see _child_model_only)."""
    result_path = work / "model_only.json"
    command = [PYTHON, "-m", "benchmarks.pipeline_bench", "--child-model-only"]
    command += [str(config_path), str(result_path)]
    process = run_process(command, out_dir=work / "no-output")
    return {**process, **json.loads(result_path.read_text())}


# --------------------------------------------------------------------------- pipeline runs


def _cpu_s() -> float:
    """User + system CPU seconds of this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def vm_hwm_mib() -> float | None:
    """This process's peak RSS (VmHWM) in MiB. Unlike ru_maxrss, which keeps the high-water
    mark of the forking parent across exec, it counts this process image only."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _child_run(config_path: str, result_path: str) -> None:
    """In a fresh process: run the pipeline, time the run() call (TensorFlow and Beam are
    imported before the clock starts, as they are for the model-only loop)."""
    started = time.perf_counter()
    import pipeline.engine.explainer  # noqa: F401
    import pipeline.engine.models  # noqa: F401  (TensorFlow, Keras)
    from pipeline.beam.run import run
    from pipeline.config.files import load_config

    config = load_config(config_path)
    import_s = time.perf_counter() - started
    cpu = _cpu_s()
    started = time.perf_counter()
    summary = run(config, [])
    run_s = time.perf_counter() - started
    run_cpu_s = _cpu_s() - cpu
    Path(result_path).write_text(
        json.dumps(
            {
                "import_s": import_s,
                "run_s": run_s,
                "run_cpu_s": run_cpu_s,
                "images_written": summary.images_written,
                "images_failed": summary.images_failed,
                "elapsed_s": summary.elapsed_s,
                "vm_hwm_mib": vm_hwm_mib(),
            }
        )
    )


def first_output(out_dir: Path) -> bool:
    """True once a final output file exists (a PNG artifact, a record shard, the manifest)."""
    if (out_dir / "manifest.jsonl").exists():
        return True
    records = out_dir / "records"
    if records.is_dir() and any(p.suffix == ".tfrecord" for p in records.iterdir()):
        return True
    artifacts = out_dir / "artifacts"
    if artifacts.is_dir():
        for _, _, files in os.walk(artifacts):
            if any(name.endswith(".png") for name in files):
                return True
    return False


def run_process(command: list[str], *, out_dir: Path, timeout: float = 3600) -> dict[str, Any]:
    """Run a child; poll for its first output; its wall time and peak RSS (os.wait4)."""
    with tempfile.TemporaryFile() as log_file:  # a pipe could fill up and block the child
        return _run_logged(command, out_dir=out_dir, timeout=timeout, log_file=log_file)


def _run_logged(command: list[str], *, out_dir: Path, timeout: float, log_file: Any) -> dict:
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=common.ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    first = None
    status = rusage = None
    while True:
        pid, status, rusage = os.wait4(child.pid, os.WNOHANG)
        now = time.perf_counter() - started
        if pid:
            break
        if first is None and first_output(out_dir):
            first = now
        if now > timeout:
            child.kill()
        time.sleep(0.05)
    wall = time.perf_counter() - started
    log_file.seek(0)
    output = log_file.read().decode(errors="replace")
    child.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{command} failed ({code}):\n{output[-3000:]}")
    return {
        "wall_s": wall,
        "first_result_s": first,
        "peak_rss_mib": rusage.ru_maxrss / 1024.0,
        "output_tail": output[-500:],
    }


def pipeline_run(config_path: Path, out_dir: Path) -> dict[str, Any]:
    """The pipeline in a fresh process, timed around run()."""
    shutil.rmtree(out_dir, ignore_errors=True)
    result_path = out_dir.parent / f"{out_dir.name}.json"
    command = [
        PYTHON,
        "-m",
        "benchmarks.pipeline_bench",
        "--child",
        str(config_path),
        str(result_path),
    ]
    process = run_process(command, out_dir=out_dir)
    return {**process, **json.loads(result_path.read_text())}


# --------------------------------------------------------------------------- all


def run(
    *,
    images: int = 96,
    method: str = "smoothgrad",
    batch: int = 8,
    memory_images: int = 12,
    quick: bool = False,
    size: int = 224,
    workdir: str | None = None,
) -> dict[str, Any]:
    """Every pipeline measurement; a JSON-ready dict."""
    root = Path(workdir or tempfile.mkdtemp(prefix="saliency-bench-"))
    size = 96 if quick else size
    out: dict[str, Any] = {"method": method, "images": images, "batch": batch, "size": size}
    space = make_workspace(root, images=images, size=size)
    config = write_config(
        root / "throughput.yaml",
        model=space["model"],
        images=space["images"],
        out=root / "out_throughput",
        method=method,
        batch=batch,
    )
    common.log(f"pipeline: model-only loop ({method}, {images} images, batch {batch})")
    loop = model_only(config, root)
    out["model_only"] = loop
    out["model_only_images_per_s"] = loop["images_per_s"]
    out["model_only_steady_images_per_s"] = loop["steady_images_per_s"]
    common.log(
        f"  {loop['images_per_s']:.3f} images/s from the model load "
        f"({loop['steady_images_per_s']:.3f} after the first batch)"
    )
    common.log("pipeline: end-to-end DirectRunner")
    e2e = pipeline_run(config, root / "out_throughput")
    out["end_to_end"] = e2e
    out["pipeline_wall_s"] = e2e["run_s"]
    out["startup_s"] = e2e["import_s"]
    out["pipeline_images_per_s"] = e2e["images_written"] / e2e["run_s"]
    # The target: both sides timed from the model load (same loads, folds and traces), so
    # the difference is what the pipeline adds: Beam, reading, decoding, every output.
    out["ratio"] = out["pipeline_images_per_s"] / out["model_only_images_per_s"]
    # Stricter: against the loop's steady state, charging the pipeline the model load and
    # the first batch's traces too (they vanish as the dataset grows).
    out["steady_ratio"] = out["pipeline_images_per_s"] / out["model_only_steady_images_per_s"]
    # CPU seconds are not inflated by other processes on a shared machine.
    out["cpu_ratio"] = loop["cold_cpu_s"] / e2e["run_cpu_s"]
    out["overhead_s"] = e2e["run_s"] - loop["cold_s"]
    common.log(
        f"  {out['pipeline_images_per_s']:.3f} images/s (ratio {out['ratio']:.3f}, "
        f"steady-state ratio {out['steady_ratio']:.3f})"
    )

    out["memory_images"] = memory_images
    rss = {}
    for n in (memory_images, 10 * memory_images):
        space_n = make_workspace(root, images=n, size=size)
        config_n = write_config(
            root / f"memory_{n}.yaml",
            model=space_n["model"],
            images=space_n["images"],
            out=root / f"out_memory_{n}",
            method="vanilla",
            batch=batch,
        )
        common.log(f"pipeline: peak RSS with {n} images (vanilla)")
        rss[n] = pipeline_run(config_n, root / f"out_memory_{n}")
        common.log(f"  {rss[n]['vm_hwm_mib']:.0f} MiB, {rss[n]['run_s']:.1f} s")
    out["memory"] = {str(n): r for n, r in rss.items()}
    out["rss_small_mib"] = rss[memory_images]["vm_hwm_mib"]
    out["rss_large_mib"] = rss[10 * memory_images]["vm_hwm_mib"]
    out["memory_growth"] = out["rss_large_mib"] / out["rss_small_mib"]

    common.log("pipeline: time to first written result, configs/local.yaml")
    local_out = root / "out_local"
    command = [
        PYTHON,
        "-m",
        "pipeline",
        "run",
        "--config",
        "configs/local.yaml",
        "--set",
        f"output.dir={local_out}",
    ]
    first = run_process(command, out_dir=local_out)
    out["local"] = first
    out["first_result_s"] = first["first_result_s"]
    common.log(
        f"  first result after {first['first_result_s']:.1f} s, done {first['wall_s']:.1f} s"
    )
    if workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child_run(argv[1], argv[2])
        return 0
    if argv[:1] == ["--child-model-only"]:
        _child_model_only(argv[1], argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--method", default="smoothgrad")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--memory-images", type=int, default=12)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", default=None, help="keep the workspace here")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    result = run(
        images=args.images,
        method=args.method,
        batch=args.batch,
        memory_images=args.memory_images,
        quick=args.quick,
        workdir=args.workdir,
    )
    from benchmarks.bench_report import pipe_table

    print(pipe_table(result))
    common.dump_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
