"""The audit's time before and after a change, on the same data, interleaved (issue 27:
within 1.3x): ``python -m pipeline audit`` (a fresh process: what a nightly audit costs)
over an output dir made by each side's own job, for the bundled job (configs/local.yaml,
12 images at 64 px) and a 224-px run (the bundled images at 224 with the suite's ReLU6 /
swish CNN, random weights, vanilla + SmoothGrad-10).

The other side is a git commit checked out under .bench/base (``--base``, default the
commit before issue 27's first change); each side runs with its own code (``python -m
pipeline`` from its folder) in this venv.

    python -m benchmarks.audit_time [--base ea55996] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import common

WORK = common.ROOT / ".bench" / "audit_time"


def _checkout(commit: str) -> Path:
    base = WORK / f"base-{commit}"
    if not base.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", str(base), commit], check=True,
                       cwd=common.ROOT, capture_output=True)  # fmt: skip
    return base


def _model_224() -> Path:
    path = WORK / "cnn224.keras"
    if not path.exists():
        import keras

        from pipeline.demo.train import build_model

        keras.utils.set_random_seed(0)
        build_model(224, 5).save(path)
    return path


def _cases() -> dict[str, list[str]]:
    return {
        "bundled": [],
        "224px": [
            f"model.name={_model_224()}",
            "model.class_names=[]",
            "saliency.methods=[vanilla, smoothgrad]",
            "saliency.samples=10",
            "batch.max_batch_size=12",
        ],  # fmt: skip
    }


def _pipeline(cwd: Path, command: str, out: Path, settings: list[str]) -> float:
    args = [sys.executable, "-m", "pipeline", command, "--config", "configs/local.yaml",
            "--set", f"output.dir={out}", "-q"]  # fmt: skip
    for s in settings:
        args += ["--set", s]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{args} in {cwd}: {proc.stderr[-2000:]}")
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="ea55996")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    sides = {"base": _checkout(args.base), "new": common.ROOT}
    results = {}
    for case, settings in _cases().items():
        outs = {side: WORK / f"{case}-{side}" for side in sides}
        for side, cwd in sides.items():  # each side's job writes its lines, then audits
            _pipeline(cwd, "run", outs[side], settings)
        seconds: dict[str, list[float]] = {side: [] for side in sides}
        for _ in range(args.rounds):
            for side, cwd in sides.items():
                seconds[side].append(_pipeline(cwd, "audit", outs[side], settings))
        med = {side: statistics.median(v) for side, v in seconds.items()}
        results[case] = {"seconds": seconds, "median": med, "ratio": med["new"] / med["base"]}
        common.log(f"{case}: base {med['base']:.2f} s, new {med['new']:.2f} s, "
                   f"ratio {results[case]['ratio']:.2f}")  # fmt: skip
    common.dump_json({"machine": common.machine(), "base": args.base, "results": results},
                     args.json)  # fmt: skip


if __name__ == "__main__":
    main()
