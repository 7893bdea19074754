"""False flags on clean trained models: the generator of tests/test_audit_patterns.py
without the tag (class 0 a disc, class 1 a square, anywhere in the middle), one small CNN
trained per seed, every flag rule of the class audit (corner, border, border_class,
off_prototype, repeated_pattern) on vanilla and guided maps.

    python -m benchmarks.false_flags [--seeds 10 --first 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_audit_patterns import _images, _reports, _trained  # noqa: E402

from benchmarks import common  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first", type=int, default=10)  # the tests use 0-3
    parser.add_argument("--json", default="-")
    args = parser.parse_args(argv)
    kinds: collections.Counter = collections.Counter()
    audits, flagged = 0, []
    for seed in range(args.first, args.first + args.seeds):
        images, labels, _ = _images(seed, tagged=False)
        model = _trained(images, labels, seed)
        for method in ("vanilla", "guided"):
            for cls, part in _reports(model, images, method).items():
                audits += 1
                for flag in part["flags"]:
                    kinds[flag["kind"]] += 1
                    flagged.append([seed, method, cls, flag["kind"], len(flag["members"])])
    result = {"class_method_audits": audits, "flags": dict(kinds), "flagged": flagged,
              "rate": sum(kinds.values()) / audits}  # fmt: skip
    common.log(f"{audits} class-method audits, flags {dict(kinds)}")
    common.dump_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
