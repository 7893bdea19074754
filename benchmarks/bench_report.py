"""benchmarks.bench's markdown tables and the ratios they show, from its result dict."""

from __future__ import annotations

from typing import Any

from benchmarks import api_bench, common

SAMPLES = 50
NOISE = 0.2

# The targets, as (key, text, threshold); each measured ratio is held against one.
TARGETS = (
    ("vanilla_vs_reference", "vanilla >= 1.0x the plain tf.function reference", 1.0),
    ("vanilla_vs_best_peer", "vanilla >= 1.3x the best peer", 1.3),
    ("api_calls_vs_persistent", "explain() calls 2-10 >= 0.95x the persistent Explainer", 0.95),
    ("guided_vs_vanilla", "guided >= 0.9x our own vanilla", 0.9),
    ("smoothgrad_vs_reference", "SmoothGrad N=50 >= 0.9x (reference vanilla / 50)", 0.9),
    ("smoothgrad_vs_best_peer", "SmoothGrad N=50 >= 1.2x the best peer", 1.2),
    ("auto_vs_float32", "precision=auto >= 1.3x float32 on ResNet50", 1.3),
    (
        "auto_rank_correlation",
        "auto maps rank-correlated with float32 >= 0.95 (trained ResNet50, worst method)",
        0.95,
    ),
    (
        "auto_rank_correlation_random",
        "(random-weight ResNet50, vanilla: chaotic, see its noise floor) >= 0.95",
        0.95,
    ),
    ("pipeline_vs_model_only", "end-to-end >= 0.9x the model-only loop", 0.9),
    (
        "pipeline_vs_steady_loop",
        "(stricter) end-to-end >= 0.9x the loop's steady state, load and traces excluded",
        0.9,
    ),
    ("memory_growth_10x", "peak RSS at 10x images <= 1.2x (flat within 20%)", None),
    ("first_result_s", "first written result <= 20 s (configs/local.yaml)", None),
)


def ratios(result: dict[str, Any]) -> dict[str, float | None]:
    """Every target's measured value, from this one run (None: not measured)."""
    out: dict[str, float | None] = {key: None for key, _, _ in TARGETS}
    engine = result.get("engine")
    if engine:
        rows = engine["batches"]
        first = rows[str(min(int(b) for b in rows))]
        ref = first["reference_vanilla"]["images_per_s"]
        ours = first["ours_vanilla"]["images_per_s"]
        out["vanilla_vs_reference"] = ours / ref
        out["guided_vs_vanilla"] = first["ours_guided"]["images_per_s"] / ours
        if "ours_smoothgrad" in first:
            out["smoothgrad_vs_reference"] = first["ours_smoothgrad"]["images_per_s"] / (
                ref / SAMPLES
            )
        best = _best_peers(result.get("peers", {}))
        if best.get("vanilla"):
            out["vanilla_vs_best_peer"] = (ours / ref) / best["vanilla"]
        if best.get("smoothgrad") and "ours_smoothgrad" in first:
            sg = first["ours_smoothgrad"]["images_per_s"] / ref
            out["smoothgrad_vs_best_peer"] = sg / best["smoothgrad"]
    if result.get("api"):
        out["api_calls_vs_persistent"] = result["api"]["calls_vs_persistent"]
    precision = result.get("precision")
    if precision:
        t = precision["timings"]
        out["auto_vs_float32"] = t["auto"]["images_per_s"] / t["float32"]["images_per_s"]
        out["auto_rank_correlation_random"] = precision["rank_correlation"]
        trained = precision.get("trained_resnet50")
        if trained:
            methods = ("vanilla", "guided", "smoothgrad")
            out["auto_rank_correlation"] = min(trained[m] for m in methods)
    pipe = result.get("pipeline")
    if pipe:
        out["pipeline_vs_model_only"] = pipe.get("ratio")
        out["pipeline_vs_steady_loop"] = pipe.get("steady_ratio")
        out["memory_growth_10x"] = pipe.get("memory_growth")
        out["first_result_s"] = pipe.get("first_result_s")
    return out


def _best_peers(peers: dict[str, Any]) -> dict[str, float]:
    """Best peer images/s per method, normalised by the peer process's own reference
    (so a peer measured in another environment or moment compares fairly)."""
    ref = peers.get("reference_vanilla", {}).get("images_per_s")
    if not ref:
        return {}
    best: dict[str, float] = {}
    for result in peers.get("peers", {}).values():
        for method, timing in result.items():
            if isinstance(timing, dict) and "images_per_s" in timing:
                best[method] = max(best.get(method, 0.0), timing["images_per_s"] / ref)
    return best


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def report(result: dict[str, Any]) -> str:
    """The markdown tables."""
    parts = []
    m = result["machine"]
    parts.append(
        f"Machine: {m['nproc']} cores, {m['cpu']} ({', '.join(m['flags'])}), "
        f"{m['memory_gib']} GiB; load average at start {m['loadavg']}, at end "
        f"{result.get('loadavg_end')}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    )
    engine = result.get("engine")
    if engine:
        rows = []
        # Numeric order: a JSON round trip with sorted keys puts "32" before "8".
        for batch, row in sorted(engine["batches"].items(), key=lambda item: int(item[0])):

            def cell(name: str, row: dict = row) -> str:
                timing = row.get(name)
                if not timing:
                    return ""
                return f"{timing['images_per_s']:.2f} (±{timing['spread'] / 2:.0%})"

            rows.append(
                [
                    f"plain batched tf.function GradientTape, batch {batch}",
                    cell("reference_vanilla"),
                    "",
                    cell("reference_smoothgrad"),
                ]
            )
            rows.append(
                [
                    f"ours (Explainer), batch {batch}",
                    cell("ours_vanilla"),
                    cell("ours_guided"),
                    cell("ours_smoothgrad"),
                ]
            )
        rows += _peer_rows(result.get("peers", {}))
        parts.append(
            f"### {engine['model']} {engine['size']}x{engine['size']}, images/s "
            f"(median; ± half the spread of the timed calls); SmoothGrad N={SAMPLES}\n\n"
            + common.markdown_table(["images/s", "vanilla", "guided", "SmoothGrad N=50"], rows)
        )
    if result.get("api"):
        parts.append(api_bench.table(result["api"]))
    precision = result.get("precision")
    if precision:
        t = precision["timings"]
        parts.append(
            f"### ResNet50 224x224, batch {precision['batch']}: speed of vanilla; map agreement "
            "(random weights, BatchNorm calibrated, unless the row says trained)\n\n"
            + common.markdown_table(
                ["precision", "images/s", "rank correlation with float32"],
                [
                    ["float32", _fmt(t["float32"]["images_per_s"]), "1"],
                    [
                        f"auto (= {precision['auto_resolves_to']})",
                        _fmt(t["auto"]["images_per_s"]),
                        _fmt(precision["rank_correlation"], 4),
                    ],
                ]
                + [
                    [f"auto, {method} maps", "", _fmt(value, 4)]
                    for method, value in precision.get("rank_correlation_by_method", {}).items()
                ]
                + [
                    [
                        "float32 at the input rounded to bfloat16 (noise floor)",
                        "",
                        _fmt(precision.get("noise_floor_input_rounded"), 4),
                    ],
                    [
                        "float32 at a 1e-4 relative input perturbation (noise floor)",
                        "",
                        _fmt(precision.get("noise_floor_relative_1e-4"), 4),
                    ],
                ]
                + [
                    [
                        f"trained example model (shapes_cnn), {method}: auto vs float32",
                        "",
                        _fmt(value, 4),
                    ]
                    for method, value in sorted(
                        precision.get("trained_example", {}).items(), key=_method_order
                    )
                ]
                + _trained_resnet50_rows(precision.get("trained_resnet50")),
            )
        )
    pipe = result.get("pipeline")
    if pipe:
        parts.append(pipe_table(pipe))
    measured = ratios(result)
    rows = []
    for key, text, threshold in TARGETS:
        value = measured[key]
        if key == "memory_growth_10x":
            met = None if value is None else value <= 1.2
        elif key == "first_result_s":
            met = None if value is None else value <= 20.0
        else:
            met = None if value is None else value >= threshold
        rows.append(
            [text, _fmt(value, 3), {None: "not measured", True: "met", False: "MISSED"}[met]]
        )
    parts.append("### Targets\n\n" + common.markdown_table(["target", "measured", ""], rows))
    if "peak_rss_mib" in result:
        parts.append(f"Peak RSS of this benchmark process: {result['peak_rss_mib']:.0f} MiB.")
    return "\n\n".join(parts)


def _peer_rows(peers: dict[str, Any]) -> list[list[str]]:
    if "peers" not in peers:
        return [["peers", peers.get("note", "not run"), "", ""]]
    rows = []
    ref = peers.get("reference_vanilla", {}).get("images_per_s")
    where = peers.get("machine", {}).get("versions", {})
    label = f"TF {where.get('tensorflow', '?')}, Keras {where.get('keras', '?')}"
    if ref:
        rows.append([f"plain reference in the peers' process ({label})", _fmt(ref), "", ""])
    for name, result in peers["peers"].items():
        version = peers.get("versions", {}).get(name)
        if "error" in result:
            rows.append([f"{name} {version}", result["error"][:80], "", ""])
            continue

        def cell(method: str, result: dict = result) -> str:
            timing = result.get(method) or {}
            if "error" in timing:
                return timing["error"][:60]
            return _fmt(timing.get("images_per_s"), 3) if timing else ""

        rows.append([f"{name} {version}", cell("vanilla"), cell("guided"), cell("smoothgrad")])
    for name, version in peers.get("versions", {}).items():
        if version is None:
            rows.append([name, "not installed", "", ""])
    return rows


def _method_order(item: tuple[str, Any]) -> int:
    order = ("vanilla", "guided", "smoothgrad")
    return order.index(item[0]) if item[0] in order else len(order)


def _trained_resnet50_rows(trained: dict[str, Any] | None) -> list[list[str]]:
    if not trained:
        return [["trained ResNet50", "", "not measured: python -m benchmarks.train_resnet50"]]
    rows = [
        [f"trained ResNet50 (shapes, 64x64), {method}: auto vs float32", "", _fmt(trained[m], 4)]
        for method, m in (
            ("vanilla", "vanilla"),
            ("guided", "guided"),
            ("SmoothGrad", "smoothgrad"),
        )
    ]
    rows.append(
        [
            "trained ResNet50, vanilla: float32 at the input rounded to bfloat16 (noise floor)",
            "",
            _fmt(trained.get("vanilla_noise_floor_input_rounded"), 4),
        ]
    )
    return rows


def pipe_table(pipe: dict[str, Any]) -> str:
    """The pipeline section's table."""
    rows = [
        [
            f"model-only loop ({pipe['method']}, {pipe['images']} images, batch {pipe['batch']}), "
            "from the model load",
            _fmt(pipe.get("model_only_images_per_s")),
            f"{_fmt(pipe.get('model_only_steady_images_per_s'))} images/s after the first batch",
        ],
        [
            "end-to-end DirectRunner (read -> every output written)",
            _fmt(pipe.get("pipeline_images_per_s")),
            f"run() {pipe.get('pipeline_wall_s', 0):.1f} s wall; ratio "
            f"{_fmt(pipe.get('ratio'), 3)} (steady-state {_fmt(pipe.get('steady_ratio'), 3)}, "
            f"CPU-seconds {_fmt(pipe.get('cpu_ratio'), 3)})",
        ],
        [
            f"peak RSS, {pipe.get('memory_images')} images",
            f"{_fmt(pipe.get('rss_small_mib'), 0)} MiB",
            "",
        ],
        [
            f"peak RSS, {10 * (pipe.get('memory_images') or 0)} images",
            f"{_fmt(pipe.get('rss_large_mib'), 0)} MiB",
            f"x{_fmt(pipe.get('memory_growth'))}",
        ],
        [
            "time to first written result (configs/local.yaml)",
            f"{_fmt(pipe.get('first_result_s'))} s",
            "",
        ],
    ]
    return "### Pipeline\n\n" + common.markdown_table(["", "images/s", "note"], rows)
