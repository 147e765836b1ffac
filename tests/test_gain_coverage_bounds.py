"""The gain-over-scratch interval's outer-fold coverage, bounded on both sides (issue 24).

``test_gain_over_scratch`` accepts any coverage in [0.7, 0.95], which a gain quantile taken at
0.7 or at 0.9 instead of the nominal 0.8 also meets. On the scratch KB fixture (10 targets,
110 gain cells, every target its own fold) the outer-fold coverage measured: nominal 0.8 →
0.773 (KB seeds 0 and 2) / 0.800 (seed 1); quantile at 0.7 → 0.700 / 0.691 / 0.700; at 0.9 →
0.918 / 0.927. One cell is 1/110 ≈ 0.009.
"""

from __future__ import annotations

import pandas as pd
import pytest
from _scratch_kb import scratch_kb

from experiments.knowledge_base import SCRATCH
from recommender.evaluation import conformal
from recommender.evaluation.selection import Folds, Procedure
from recommender.model import build_meta_dataset

CANDS = ("static", "estimate:est_good", "estimate:est_noise")


@pytest.fixture(scope="module")
def est() -> pd.DataFrame:
    md = build_meta_dataset(scratch_kb())
    proc = Procedure(md, Folds(md))
    proc.cands = {k: v for k, v in proc.cands.items() if k in CANDS}  # untuned: no Optuna
    iv = pd.concat([proc.outer_fold(g).intervals for g in proc.folds.labels], ignore_index=True)
    return iv[iv["scenario"] == "estimates"]


def test_gain_coverage_is_near_the_nominal_80_percent(est: pd.DataFrame) -> None:
    cov = conformal.coverage(est)["gain"]
    assert cov["nominal"] == conformal.NOMINAL == 0.8
    assert cov["n_cells"] == 110 and cov["n_targets"] == 10
    inside = ((est["gain"] >= est["gain_lo"]) & (est["gain"] <= est["gain_hi"]))[est["source"] != SCRATCH]
    assert cov["coverage"] == pytest.approx(inside.mean())
    # lower bound kills a gain quantile at 0.7 (coverage 0.700); upper bound kills one at 0.9 (0.918)
    assert 0.73 <= cov["coverage"] <= 0.88, cov
