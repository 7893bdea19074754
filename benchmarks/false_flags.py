"""False flags on clean trained models, and what the causal test makes of them.

Two clean generators (tests/test_audit_patterns.py's, 32 x 32, class 0 a disc and class 1
a square anywhere in the middle, one small CNN trained per seed):

- ``clean``: nothing else;
- ``distractor``: the same 3 x 3 tag the shortcut tests plant, at a random place in a third
  of the images of BOTH classes: a repeated pattern that says nothing about the class.

Every flag rule of the class audit (corner, border, border_class, off_prototype,
repeated_pattern) on vanilla and guided maps, and each flag's causal confirmation
(audit.causal.interventions) with the trained model.

    python -m benchmarks.false_flags [--seeds 10 --first 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

from benchmarks import common
from pipeline.audit.causal.interventions import CONFIRM_MEMBERS, CONFIRMABLE, Subject, confirm_flag
from pipeline.audit.metrics.relevance import relevance
from pipeline.engine.explainer import Explainer
from pipeline.testing.patterns import class_reports as _reports
from pipeline.testing.patterns import tag_images as _images
from pipeline.testing.patterns import trained as _trained

ROOT = Path(__file__).resolve().parents[1]

GENERATORS = ("clean", "distractor")


def images(seed: int, generator: str) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 32, 32, 3] in [0, 1], labels) of a clean generator."""
    pixels, labels, _ = _images(seed, tagged=False, distractor=generator == "distractor")
    return pixels, labels


def _confirm(flag: dict, cls: int, model, pixels: np.ndarray, method: str) -> dict:
    explainer = Explainer(model, precision="float32")
    predicted = np.argmax(explainer.logits(pixels), axis=1)
    u8 = np.round(pixels * 255).astype(np.uint8)
    index = sorted(int(k[4:8]) for k in flag["members"])[:CONFIRM_MEMBERS]
    grads = explainer.explain(pixels[index], method, targets=predicted[index]).gradients
    members = [Subject(f"img/{i:04d}.png", u8[i], int(predicted[i]), {method: relevance(g)})
               for i, g in zip(index, grads)]  # fmt: skip
    others = [Subject(f"img/{i:04d}.png", u8[i], int(predicted[i]), {})
              for i in np.flatnonzero(predicted != cls)[:64]]  # fmt: skip
    result, _ = confirm_flag(flag, cls, members, others,
                             lambda b: explainer.logits(b.astype(np.float32) / 255.0))  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first", type=int, default=10)  # the tests use 0-3
    parser.add_argument("--json", default="-")
    args = parser.parse_args(argv)
    result = {}
    for generator in GENERATORS:
        kinds: collections.Counter = collections.Counter()
        audits, flagged, confirmed = 0, [], 0
        for seed in range(args.first, args.first + args.seeds):
            pixels, labels = images(seed, generator)
            model = _trained(pixels, labels, seed)
            for method in ("vanilla", "guided"):
                for cls, part in _reports(model, pixels, method).items():
                    audits += 1
                    for flag in part["flags"]:
                        kinds[flag["kind"]] += 1
                        verdict = "not testable"
                        if flag["kind"] in CONFIRMABLE:
                            test = _confirm(flag, cls, model, pixels, method)
                            confirmed += bool(test["confirmed"])
                            verdict = test["verdict"]
                        flagged.append([seed, method, cls, flag["kind"], len(flag["members"]),
                                        verdict])  # fmt: skip
        flags = sum(kinds.values())
        result[generator] = {"class_method_audits": audits, "flags": dict(kinds),
                             "confirmed": confirmed, "flags_per_audit": flags / audits,
                             "confirmed_per_audit": confirmed / audits,
                             "flagged": flagged}  # fmt: skip
        common.log(f"{generator}: {audits} class-method audits, flags {dict(kinds)}, "
                   f"confirmed {confirmed}")  # fmt: skip
    common.dump_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
