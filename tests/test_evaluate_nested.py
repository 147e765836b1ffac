"""`catscans evaluate-meta` end to end on a synthetic KB with groups, seeds and estimates: nested
figures, paired comparisons, coverage, ceiling in the JSON; the saved model ranks so that order,
predicted AUC and interval agree."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from _synthetic_kb import synthetic_kb
from typer.testing import CliRunner

from experiments.knowledge_base import load_kb, save_kb
from recommender.cli import app
from recommender.model import load_recommender, rows_for_new_target
from recommender.model.scoring import difficulty

runner = CliRunner()


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nested")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CATSCANS_ARTIFACTS", str(tmp / "artifacts"))
        save_kb(synthetic_kb(n_targets=7, seeds=4), tmp / "artifacts" / "kb" / "synth")
        res = runner.invoke(app, ["evaluate-meta", "--kb", "synth", "--trials", "1", "--format", "json"])
        yield tmp, res


def test_json_has_nested_figures_comparisons_coverage_and_ceiling(evaluated):
    tmp, res = evaluated
    assert res.exit_code == 0, res.output
    p = json.loads(res.stdout)
    assert p["n_targets"] == 7 and p["n_groups"] == 5  # t0/t1 derived, t2/t3 twins
    methods = {r["method"] for r in p["summary"]}
    assert {"shipped", "shipped+est", "static", "residual", "learned", "learned+est", "estimate:best",
            "stack+est", "rankavg:static+all", "estimate:est_good", "static_readme", "random"} <= methods
    assert p["n_candidates"] == {"any": 3, "estimates": 7}
    assert {c["scenario"] for c in p["fold_choices"]} == {"any", "estimates"}
    assert len(p["fold_choices"]) == 2 * 5
    comp = {(c["a"], c["b"], c["metric"]): c for c in p["comparisons"]}
    c = comp[("shipped", "static", "tau_w")]
    assert c["unit"] == "groups" and c["n"] == 5 and c["n_targets"] == 7
    assert {"mean_diff", "lo", "hi", "p", "words"} <= set(c)
    assert ("shipped+est", "estimate:est_good", "tau_w") in comp or any(
        k[0] == "shipped+est" and k[1].startswith("estimate:") for k in comp)
    cov = p["coverage"]["any"]
    assert cov["nominal"] == 0.8 and cov["n_cells"] > 0 and 0.0 <= cov["coverage"] <= 1.0
    assert p["noise_ceiling"]["status"] == "ok" and p["noise_ceiling"]["n_targets"] == 7
    assert any("noise ceiling ≈" in n for n in p["notes"])
    assert any(n.startswith("shipped vs static: Δτw") for n in p["notes"])
    man = json.loads((tmp / "artifacts" / "models" / "synth" / "manifest.json").read_text())
    assert man["format"] == 2 and set(man["shipped"]) == {"any", "estimates"}
    assert not man["shipped"]["any"]["uses_estimates"]


def test_saved_model_order_predicted_auc_and_interval_agree(evaluated, monkeypatch):
    tmp, _ = evaluated
    monkeypatch.setenv("CATSCANS_ARTIFACTS", str(tmp / "artifacts"))
    kb = load_kb("synth")
    rec = load_recommender("synth")
    card = {"name": "user", "domain": "medical", "modality": "ct", "n_images": 400, "n_classes": 2,
            "channels": 1, "resolution": 64, "task": "binary"}
    rows = rows_for_new_target(kb, card, None, None)
    for est in (False, True):
        ranked = rec.rank(rows, estimates=est)
        assert ranked["score"].is_monotonic_decreasing
        assert ranked["predicted_auc"].is_monotonic_decreasing  # the predicted column orders like the rows
        cal = rec.scenario(est).calibration
        q = cal["q"]
        if q is not None:
            assert cal["normalised"]  # half-width = q × the folder's difficulty (1 − its level) ** γ
            half = (ranked["hi80"] - ranked["lo80"]) / 2
            inner = (ranked["hi80"] < 1) & (ranked["lo80"] > 0)
            assert inner.any()
            power = cal["scale_power"]  # chosen on the calibration cells, 0 (plain) to 1
            np.testing.assert_allclose(half[inner], q * difficulty(ranked["level"][inner].to_numpy()) ** power)


def test_three_target_kb_prints_no_ci(tmp_path, monkeypatch):
    monkeypatch.setenv("CATSCANS_ARTIFACTS", str(tmp_path / "artifacts"))
    save_kb(synthetic_kb(n_targets=3, groups=False, estimates=False), tmp_path / "artifacts" / "kb" / "three")
    res = runner.invoke(app, ["evaluate-meta", "--kb", "three", "--trials", "1", "--no-save"])
    assert res.exit_code == 0, res.output
    ranking = res.stdout.split("Correlation")[0]
    assert "no CI" in ranking and not re.search(r"\d\.\d{3} \[-?\d", ranking)  # no 'x.xxx [lo, hi]'
    assert "n too small" in res.stdout
