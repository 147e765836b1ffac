"""The learned model's AUC level follows the folder: a synthetic KB whose targets' level is set by
one of their meta-features, and one where that feature carries nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recommender.model import build_meta_dataset, fold_rows
from recommender.model.meta_dataset import new_target_rows
from recommender.model.outcome import LevelModel, OutcomeModel
from recommender.model.scoring import Context
from tests._synthetic_kb import synthetic_kb

FEATURE = "label.nn1_accuracy"


def _kb(informative: bool, seed: int = 0):
    kb = synthetic_kb(n_targets=14, n_extra=3, seeds=3, seed=seed, level_sd=0.005, groups=False)
    rng = np.random.default_rng(seed + 1)
    names = list(kb.datasets["name"])
    f = dict(zip(names, rng.uniform(0.0, 1.0, len(names)), strict=True))
    shown = f if informative else dict(zip(names, rng.permutation(list(f.values())), strict=True))
    rec = kb.records.copy()
    rec["value"] = rec["value"] + 0.3 * (rec["target"].map(f) - 0.5)  # the level is set by f
    kb.records = rec
    kb.meta_features = pd.DataFrame({"dataset": names, FEATURE: [shown[n] for n in names]})
    return kb, f


def _held_out_levels(kb) -> pd.DataFrame:
    md = build_meta_dataset(kb)
    ctx = Context.of(md)
    rows = []
    for t in md.targets:
        train, test = fold_rows(md, [t])
        lv = LevelModel.fit(train, ctx, use_estimates=True).level(test)
        rows.append({"target": t, "predicted": float(lv[0]), "measured": float(test["auc"].mean()),
                     "baseline": float(train.groupby("target")["auc"].mean().mean())})
    return pd.DataFrame(rows)


def test_predicted_level_follows_a_target_feature() -> None:
    kb, _ = _kb(informative=True)
    r = _held_out_levels(kb)
    mae = (r["predicted"] - r["measured"]).abs().mean()
    base = (r["baseline"] - r["measured"]).abs().mean()
    assert np.corrcoef(r["predicted"], r["measured"])[0, 1] > 0.9
    assert mae < 0.4 * base, (mae, base)


def test_an_uninformative_feature_gives_no_gain_over_the_kb_average() -> None:
    kb, _ = _kb(informative=False)
    r = _held_out_levels(kb)
    mae = (r["predicted"] - r["measured"]).abs().mean()
    base = (r["baseline"] - r["measured"]).abs().mean()
    # the penalty chosen on the training targets shrinks a useless feature to the mean level
    assert mae > 0.8 * base, (mae, base)


def test_a_new_folder_gets_the_level_of_its_feature() -> None:
    kb, _ = _kb(informative=True)
    md = build_meta_dataset(kb)
    ctx = Context.of(md)
    from recommender.model import all_rows

    model = OutcomeModel.fit(all_rows(md), ctx, use_estimates=False)
    card = {"name": "new", "domain": "medical", "modality": "x-ray", "n_images": 2000, "n_classes": 2,
            "channels": 1, "resolution": 64}
    levels = []
    for value in (0.1, 0.9):
        rows = new_target_rows(md, card, pd.Series({FEATURE: value}), None)
        levels.append(float(model.level(rows)[0]))
        pred = model.level(rows) + model.deviation(rows)
        assert np.allclose(pred.mean(), levels[-1], atol=1e-9)  # deviations centre on the level
    assert levels[1] - levels[0] > 0.15, levels  # truth: 0.3 × 0.8 = 0.24


def test_outcome_model_state_round_trips() -> None:
    kb, _ = _kb(informative=True)
    md = build_meta_dataset(kb)
    ctx = Context.of(md)
    train, test = fold_rows(md, [md.targets[0]])
    m = OutcomeModel.fit(train, ctx, use_estimates=True)
    back = OutcomeModel.from_state(m.state(), ctx)
    assert np.allclose(back.level(test), m.level(test))
    assert np.allclose(back.deviation(test), m.deviation(test))
    # the reasons `recommend --wide` prints are the deviation's own terms: they sum to it per row
    c = back.contributions(test)
    assert list(c.index) == list(test["source"]) and "bias" not in c
    assert np.allclose(c.sum(axis=1).to_numpy(), back.deviation(test), atol=1e-9)
    assert (c.abs().sum(axis=0) > 0).sum() >= 1  # some feature moves the order
