"""Drift between two audits: rules parsed and checked by hand, classes ranked by change,
and the CLI's exit code when a rule breaks."""

import json
from pathlib import Path

import pytest

from pipeline.audit.report.drift import Rule, check_rules, compare, parse_rule, similarity
from pipeline.testing.processes import run_cli

ROOT = Path(__file__).resolve().parents[1]


def _audit(pointing: float, energy: float, maps: dict[str, list], flags: dict[str, list]) -> dict:
    classes = {
        c: {"count": 10, "accuracy": 1.0, "flags": [{"kind": k, "method": "guided"} for k in
                                                     flags.get(c, [])],
            "methods": {"guided": {"metrics": {"gini": 0.5, "pointing": pointing},
                                   "mean_map_values": m}}}
        for c, m in maps.items()
    }  # fmt: skip
    return {"records": 20, "classes": classes,
            "methods": {"guided": {"localisation": {"pointing": pointing, "energy_in_box": energy},
                                   "faithfulness": None}}}  # fmt: skip


SAME = [[1.0, 0.0], [0.0, 0.0]]
MOVED = [[0.0, 0.0], [0.0, 1.0]]


def test_rules_parse_and_name_the_form():
    assert parse_rule("pointing:-0.05") == Rule("pointing", -0.05)
    assert parse_rule("energy_in_box@guided:-10%") == Rule("energy_in_box", -10.0, True, "guided")
    assert parse_rule("flags:+0") == Rule("flags", 0.0)
    for bad in ("pointing:0.05", "pointing-0.05", "accuracyy:-1", "flags:+10%"):
        with pytest.raises(ValueError, match="--fail-on"):
            parse_rule(bad)


def test_changes_are_ranked_and_rules_break_by_hand():
    a = _audit(0.9, 0.6, {"0": SAME, "1": SAME}, {})
    b = _audit(0.8, 0.57, {"0": SAME, "1": MOVED}, {"1": ["corner"]})
    drift = compare(a, b)
    assert [c["class"] for c in drift["classes"]] == ["1", "0"]  # the moved class first
    moved = drift["classes"][0]["methods"]["guided"]
    assert moved["similarity"] == 0.0 and moved["flags_appeared"] == ["corner"]
    assert moved["clusters"] == {"before": [], "after": []}
    assert drift["classes"][1]["methods"]["guided"]["similarity"] == pytest.approx(1.0)
    assert drift["methods"]["guided"]["pointing"]["change"] == pytest.approx(-0.1)
    assert drift["flags"] == {"before": 0, "after": 1, "change": 1, "relative": None}
    rules = [parse_rule(r) for r in ("pointing:-0.05", "energy_in_box:-10%", "flags:+0",
                                     "pointing:-0.2", "energy_in_box:-4%")]  # fmt: skip
    broken = check_rules(drift, rules)
    assert len(broken) == 3  # pointing fell 0.1 > 0.05; energy fell 5% > 4%; a new flag
    assert broken[0].startswith("pointing:-0.05: pointing of guided went from 0.9 to 0.8")
    assert any(line.startswith("energy_in_box:-4%") and "-5.0%" in line for line in broken)
    assert check_rules(compare(a, a), rules) == []
    assert similarity(SAME, [[2.0, 0.0], [0.0, 0.0]]) == pytest.approx(1.0)
    assert similarity(SAME, [[1.0]]) is None


_cli = run_cli


@pytest.mark.slow
def test_the_cli_exits_6_on_a_broken_rule_and_2_on_a_bad_one(tmp_path):
    a = _audit(0.9, 0.6, {"0": SAME}, {})
    b = _audit(0.7, 0.6, {"0": MOVED}, {})
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "audit").mkdir()
    (tmp_path / "a" / "audit" / "audit.json").write_text(json.dumps(a))  # an output dir
    (tmp_path / "b.json").write_text(json.dumps(b))  # or the file itself
    ok = _cli("drift", str(tmp_path / "a"), str(tmp_path / "b.json"), "--fail-on", "flags:+0")
    assert ok.returncode == 0, ok.stderr
    assert "class 0: change" in ok.stdout
    broke = _cli("drift", str(tmp_path / "a"), str(tmp_path / "b.json"),
                 "--fail-on", "pointing:-0.05", "--json")  # fmt: skip
    assert broke.returncode == 6
    assert "drift: broken rule pointing:-0.05" in broke.stderr
    assert json.loads(broke.stdout)["broken"][0].startswith("pointing:-0.05")
    bad = _cli("drift", str(tmp_path / "a"), str(tmp_path / "b.json"), "--fail-on", "oops")
    assert bad.returncode == 2 and "METRIC[@METHOD][[SLICE]]:CHANGE" in bad.stderr
    missing = _cli("drift", str(tmp_path / "nowhere"), str(tmp_path / "b.json"))
    assert missing.returncode == 2 and "cannot read the audit" in missing.stderr
