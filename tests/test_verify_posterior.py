"""Verify's posterior (prediction × measurement), its pick rule and its pairing by design.

The model's algebra is checked against the closed forms (one candidate: the precision-weighted
mean; the prior of a difference: √(s₁² + s₂²)); the pick rule at the threshold from both sides;
the replay on synthetic KBs (:func:`recommender.verify.replay.synthetic_kb`) where the truth is
known: a right prior with noisy measurements keeps the prior's pick, a wrong prior with clear
measurements moves, and each test is shown to fail for a posterior that ignores the prior (the
first) or the data (the second). Pairing: verify's cells share one seed per repeat, and a round
whose records differ in seed, training size or test images is refused.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_build_matrix_e2e import _toy_set
from typer.testing import CliRunner

import recommender.verify.posterior as post_mod
import recommender.verify.replay as replay_mod
from experiments.cells import SCRATCH, Cell
from recommender.cli import app
from recommender.verify.pairing import PairedCell, PairingError, check_paired
from recommender.verify.posterior import (
    DISPLACE,
    Block,
    Picker,
    Posterior,
    block_from_seeds,
    combine,
    prior_from_rows,
    seed_floor,
    top_up,
    z_of,
)
from recommender.verify.replay import replay_posterior, synthetic_kb, target_data

VERIFY, TRUTH = [0, 1, 2, 3, 4], list(range(5, 125))


# -- the model -------------------------------------------------------------------------------
def test_prior_from_per_row_gain_intervals() -> None:
    """sd = half-width / z(80%) per row (half-widths differ by row), independent gain errors, so a
    difference to the leader has sd √(s_c² + s_L²); scratch is the reference (gain 0, sd 0)."""
    rows = pd.DataFrame({"source": ["a", "b", SCRATCH], "predicted_auc": [0.90, 0.88, 0.87],
                         "lo": [0.8, 0.78, 0.77], "hi": [1.0, 0.98, 0.97],
                         "predicted_gain": [0.03, 0.01, 0.0], "gain_lo": [0.0, -0.03, np.nan],
                         "gain_hi": [0.06, 0.05, np.nan]})
    p = prior_from_rows(rows, ["a", "b", SCRATCH], SCRATCH)
    assert p.basis == "gain interval" and z_of(0.8) == pytest.approx(1.2816, abs=1e-4)
    sa, sb = 0.03 / 1.28155, 0.04 / 1.28155
    assert p.sd == pytest.approx([sa, sb], rel=1e-4) and p.mean == pytest.approx([0.03, 0.01])
    assert p.diff_sd("b", "a") == pytest.approx(math.hypot(sa, sb), rel=1e-4)
    assert p.diff_sd(SCRATCH, "a") == pytest.approx(sa, rel=1e-4)
    assert p.leader(["b", "a", SCRATCH]) == "a"


def test_prior_from_auc_intervals_shares_the_reference_error() -> None:
    rows = [{"source": "a", "predicted_auc": 0.9, "lo80": 0.8, "hi80": 1.0},
            {"source": SCRATCH, "predicted_auc": 0.85, "lo80": 0.80, "hi80": 0.90}]
    p = prior_from_rows(rows, ["a", "new", SCRATCH], SCRATCH)
    s_a, s_r = 0.1 / 1.28155, 0.05 / 1.28155
    assert p.basis == "AUC interval" and p.mean[0] == pytest.approx(0.05)
    assert p.sd[0] == pytest.approx(math.hypot(s_a, s_r), rel=1e-4)
    assert math.isinf(p.sd[1]) and p.precision[1].sum() == 0  # no prediction: a flat prior
    assert prior_from_rows(None, ["a", SCRATCH], SCRATCH).basis == "none"


def test_one_candidate_posterior_is_the_precision_weighted_mean() -> None:
    rows = pd.DataFrame({"source": ["a"], "predicted_gain": [0.02], "gain_lo": [0.0], "gain_hi": [0.04]})
    p = prior_from_rows(rows, ["a", SCRATCH], SCRATCH)
    s2, v = (0.02 / z_of(0.8)) ** 2, 0.01 ** 2
    post = combine(p, [Block(["a"], np.array([-0.01]), np.array([[v]]), 5)])
    w = (1 / s2) / (1 / s2 + 1 / v)
    assert post.mean[0] == pytest.approx(w * 0.02 + (1 - w) * -0.01)
    assert post.cov[0, 0] == pytest.approx(1 / (1 / s2 + 1 / v))
    assert post.names[-1] == SCRATCH and post.mean[-1] == 0
    with pytest.raises(ValueError, match="no prediction and no measurement"):
        combine(prior_from_rows(None, ["a", SCRATCH], SCRATCH), [])


def test_a_reduced_round_informs_only_differences_between_its_sources() -> None:
    """Round 1 at fewer images/epochs: every gain over scratch there is +0.10 higher than at the full
    protocol. Its block (offset) says b is 0.03 above a; the full round says a gains 0.02: b's
    posterior gain is about 0.05, not the reduced round's 0.15."""
    p = prior_from_rows(None, ["a", "b", SCRATCH], SCRATCH)
    v = 1e-6
    full = Block(["a"], np.array([0.02]), np.array([[v]]), 5, 1)
    reduced = Block(["a", "b"], np.array([0.12, 0.15]), np.array([[v, v / 2], [v / 2, v]]), 3, 0, offset=True)
    post = combine(p, [full, reduced])
    assert post.mean[:2] == pytest.approx([0.02, 0.05], abs=1e-3)
    naive = combine(p, [full, Block(["a", "b"], reduced.diff, reduced.cov, 3, 0)])  # as if at the full protocol
    assert naive.mean[1] > 0.1
    with pytest.raises(ValueError, match="cannot place them"):  # b alone in a reduced round: not placed
        combine(p, [full, Block(["b"], np.array([0.15]), np.array([[v]]), 3, 0, offset=True)])


def test_top_up_and_seed_floor() -> None:
    f = np.array([[2.0, 1.0], [1.0, 2.0]])  # k = 2 differences: ν₀ = 3 pseudo-seeds
    assert np.allclose(top_up(np.zeros((2, 2)), f, 1), f)  # one seed: the whole floor
    assert np.allclose(top_up(np.eye(2), f, 4), np.eye(2) + 3 / 6 * f / 4)  # a share that fades with seeds
    singular = np.ones((2, 2)) * 0.01  # two differences measured as one (n ≤ k seeds)
    assert np.linalg.matrix_rank(top_up(singular, f, 2)) == 2
    own = top_up(np.diag([0.01, 0.03]), None, 4)  # no KB floor: the round's own mean variance, same shape
    assert np.allclose(own, np.diag([0.01, 0.03]) + 3 / 6 * 0.02 * (0.5 * np.eye(2) + 0.5))
    rng = np.random.default_rng(0)
    recs = pd.DataFrame([{"source": s, "target": t, "seed": k, "value": rng.normal(0, 0.02 if t != "noisy" else 1)}
                         for t in ("t0", "t1", "noisy") for s in ("a", "b", SCRATCH) for k in range(40)])
    v = seed_floor(recs, SCRATCH, exclude=["noisy"])
    assert v == pytest.approx(2 * 0.02 ** 2, rel=0.3)  # var(a − scratch) = 2σ²; the excluded target is left out
    assert math.isnan(seed_floor(recs[recs["source"] != SCRATCH], SCRATCH))


def _posterior(diff: float, sd: float) -> Posterior:
    """Two candidates: 'c' − 'lead' ~ N(diff, sd²) (the leader as the reference)."""
    return Posterior(["c", "lead"], "lead", np.array([diff, 0.0]), np.array([[sd ** 2, 0.0], [0.0, 0.0]]))


def test_pick_rule_at_the_threshold() -> None:
    z = z_of(2 * DISPLACE - 1)  # P(c > lead) = DISPLACE at diff = z·sd
    assert _posterior(0.99 * z * 0.01, 0.01).pick("lead") == "lead"
    assert _posterior(1.01 * z * 0.01, 0.01).pick("lead") == "c"
    s = _posterior(0.0, 0.01).summary("lead")
    assert s["pick"] == "lead" and not s["displaced"] and set(s["tied"]) == {"c", "lead"}
    assert sum(r["p_best"] for r in s["rows"].values()) == pytest.approx(1.0)
    assert s["rows"]["c"]["exp_regret"] == pytest.approx(0.01 / math.sqrt(2 * math.pi), rel=0.05)
    far = _posterior(0.1, 0.01).summary("lead")
    assert far["pick"] == "c" and far["tied"] == ["c"] and far["rows"]["lead"]["exp_regret"] == pytest.approx(0.1, 1e-3)


# -- the replay on synthetic KBs with a known truth ---------------------------------------------
def _targets(seed_sd: float, seed: int) -> list:
    kb = synthetic_kb(n_targets=16, n_sources=5, n_seeds=len(VERIFY) + len(TRUTH), seed=seed, seed_sd=seed_sd)
    return [target_data(kb, t, VERIFY, TRUTH) for t in kb.targets]


def _prior_rows(td, gains: pd.Series, half: float) -> pd.DataFrame:  # noqa: ANN001
    return pd.DataFrame({"source": gains.index, "predicted_gain": gains.to_numpy(),
                         "gain_lo": gains.to_numpy() - half, "gain_hi": gains.to_numpy() + half})


def _keep_rate(tds: list, sigma2: float) -> float:
    """Prior = the truth (gains over scratch, ±0.006): how often verify keeps the prior's pick."""
    kept = []
    for td in tds:
        gains = (td.truth - td.truth[SCRATCH]).drop(SCRATCH)
        short = list(gains.sort_values(ascending=False).index[:4])
        lead = max([*short, SCRATCH], key=lambda s: td.truth[s])
        pick, _, _ = replay_posterior(td, short, 1.0, _prior_rows(td, gains, 0.006), lead, sigma2)
        kept.append(pick == lead)
    return float(np.mean(kept))


def _move_rate(tds: list, sigma2: float) -> float:
    """Prior = the truth reversed (its worst source predicted best, ±0.02): how often verify picks
    the true best of the shortlist."""
    right = []
    for td in tds:
        gains = (td.truth - td.truth[SCRATCH]).drop(SCRATCH)
        short = list(gains.index)
        wrong = pd.Series(-gains.to_numpy(), index=gains.index)
        lead = wrong.idxmax()
        best = max([*short, SCRATCH], key=lambda s: td.truth[s])
        pick, _, _ = replay_posterior(td, short, 1.0, _prior_rows(td, wrong, 0.02), lead, sigma2)
        right.append(pick == best and lead != best)
    return float(np.mean(right))


def test_right_prior_and_noisy_measurements_keep_the_prior_pick(monkeypatch: pytest.MonkeyPatch) -> None:
    sd = 0.05  # per-seed sd of an AUC, far above the sources' gaps: five seeds reorder them
    tds = _targets(sd, seed=11)
    sigma2 = 2 * sd ** 2
    assert _keep_rate(tds, sigma2) >= 0.9
    # a posterior that ignores the prior (a flat prior, no predicted first: the measured best) moves
    # off the right pick far more often
    class NoPrior(Picker):
        def __init__(self, prior, leader, block, threshold=DISPLACE) -> None:  # noqa: ANN001
            super().__init__(prior_from_rows(None, [*prior.names, prior.reference], prior.reference), None,
                             block, threshold)

    monkeypatch.setattr(replay_mod, "Picker", NoPrior)
    assert _keep_rate(tds, sigma2) < 0.75


def test_wrong_prior_and_clear_measurements_move(monkeypatch: pytest.MonkeyPatch) -> None:
    sd = 0.002  # per-seed sd far below the gaps: five seeds order the sources right
    tds = _targets(sd, seed=12)
    sigma2 = 2 * sd ** 2
    assert _move_rate(tds, sigma2) >= 0.9
    # a posterior that ignores the measurements keeps the wrong prediction
    real = post_mod.combine
    monkeypatch.setattr(post_mod, "combine", lambda prior, blocks: real(prior, []))
    assert _move_rate(tds, sigma2) < 0.1


def test_block_from_seeds_is_the_paired_seed_bootstrap() -> None:
    vals = {"a": [0.80, 0.82, 0.84], "b": [0.70, 0.71, 0.75], SCRATCH: [0.75, 0.77, 0.76]}
    b = block_from_seeds(vals, SCRATCH, sigma2=0.0004)
    d = np.array([[0.05, 0.05, 0.08], [-0.05, -0.06, -0.01]])
    boot = np.cov(d, ddof=0) / 3  # what a bootstrap over the 3 seeds gives, plus 3/5 of the floor / 3
    assert b.diff == pytest.approx(d.mean(1))
    assert np.allclose(b.cov, boot + 3 / 5 * 0.0004 * (0.5 * np.eye(2) + 0.5) / 3)
    one = block_from_seeds({"a": [0.8], SCRATCH: [0.7]}, SCRATCH, sigma2=0.0004)
    assert one.cov[0, 0] == pytest.approx(0.0004)  # one seed: the KB's floor, not zero


# -- paired by design --------------------------------------------------------------------------
def test_paired_cells_share_the_seed_of_their_repeat() -> None:
    a, b = PairedCell("finetune", "a", "t", 0, "h"), PairedCell("finetune", "b", "t", 0, "h")
    assert a.seed == b.seed and a.key != b.key and a.seed != PairedCell("finetune", "a", "t", 1, "h").seed
    assert Cell("finetune", "a", "t", 0, "h").seed != Cell("finetune", "b", "t", 0, "h").seed  # a KB cell's differ


def _rec(source: str, r: int, **kw: object) -> dict:
    base = {"source": source, "repeat": r, "protocol_hash": "h", "seed": 100 + r, "n_train": 60, "n_test": 80,
            "test_predictions": {"index_digest": "abc"}}
    return base | kw


def test_check_paired_refuses_unpaired_rounds() -> None:
    ok = {s: {r: _rec(s, r) for r in range(2)} for s in ("a", "b", SCRATCH)}
    check_paired(ok)
    for field, value, what in (("seed", 7, "head seed"), ("n_train", 30, "training subsample"),
                               ("test_predictions", {"index_digest": "zzz"}, "test images")):
        bad = {s: dict(v) for s, v in ok.items()}
        bad["b"] = {0: _rec("b", 0, **{field: value}), 1: _rec("b", 1)}
        with pytest.raises(PairingError, match=what) as e:
            check_paired(bad, "round 1")
        assert "round 1, seed 0" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(PairingError, match="same seeds"):
        check_paired({"a": {0: _rec("a", 0)}, "b": {1: _rec("b", 1)}})


TINY = """
name = "tinyp"
arch = "resnet-tiny"
side = 16
channels = 3
sources = ["src_a", "src_b"]
targets = ["tgt_c"]
[evaluation]
mode = "seeds"
repeats = 2
n_train = 60
n_val = 30
n_test = 80
[pretrain]
epochs = 2
batch_size = 32
lr = 0.01
patience = 2
max_images = 120
[finetune]
epochs = 2
batch_size = 32
lr = 0.01
patience = 2
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("vpost")
    data = tmp / "data"
    data.mkdir()
    _toy_set(data / "src_a.npz", 4, 160, False, 1, True)
    _toy_set(data / "src_b.npz", 3, 120, True, 2, False)
    _toy_set(data / "tgt_c.npz", 2, 100, False, 3, True)
    _toy_set(tmp / "user.npz", 2, 200, True, 9, False)
    (tmp / "tiny.toml").write_text(TINY)
    res = CliRunner().invoke(app, ["build-matrix", "--protocol", str(tmp / "tiny.toml"), "--data-dir", str(data),
                                   "--run-dir", str(tmp / "run"), "--threads", "1", "-q", "--export-kb", "tinyp",
                                   "--kb-out", str(tmp / "kb")])
    assert res.exit_code == 0, res.output
    return {"tmp": tmp, "data": data, "kb": tmp / "kb", "user": tmp / "user.npz"}


def _args(t: dict, root: Path, *extra: str) -> list[str]:
    return ["verify", "--target", str(t["user"]), "--kb", str(t["kb"]), "--data-dir", str(t["data"]),
            "--run-root", str(root), "--threads", "1", "-q", "--budget", "1", "--seeds", "2", *extra]


def test_verify_rounds_are_paired_and_print_the_posterior(tiny: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    root = tiny["tmp"] / "run1"
    res = CliRunner().invoke(app, _args(tiny, root, "--format", "json"))
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    post = out["posterior"]
    assert post["pick"] in {r["candidate"] for r in out["rows"]} and post["rule"].startswith("the pick is")
    assert sum(r["p_best"] for r in out["rows"]) == pytest.approx(1.0, abs=1e-9)
    assert all(r["exp_regret"] >= 0 for r in out["rows"]) and post["pick"] in post["tied"]
    # no trained model: the KB's static ranking sets the predicted first, with no interval (a flat prior)
    assert post["basis"] == "none" and not post["no_prediction"] and "flat prior" in post["text"]
    flat = CliRunner().invoke(app, _args(tiny, root, "--no-prior", "--format", "json"))  # the same cells, reused
    assert flat.exit_code == 0, flat.output
    fp = json.loads(flat.stdout)["posterior"]
    assert fp["no_prediction"] and fp["pick"] == max(out["rows"], key=lambda r: r["auc"])["candidate"]
    (folder,) = (root / "runs" / "verify").iterdir()
    cells = [json.loads(p.read_text()) for p in (folder / "cells").glob("*.json")]
    by = {}
    for c in cells:
        by.setdefault((c["protocol_hash"], c["repeat"]), []).append(c)
    assert len(by) >= 2 and all(len({c["seed"] for c in g}) == 1 and len(g) >= 2 for g in by.values())
    table = CliRunner().invoke(app, _args(tiny, root))
    assert table.exit_code == 0, table.output
    assert "pick: prediction × measurement" in table.stdout and "P(best)" in table.stdout
    assert "cannot be told apart at 95%" in table.stdout or "told apart from every other" in table.stdout
    assert not [ln for ln in table.stdout.splitlines() if len(ln) > 80]
    # a cell of the store tampered with (another head seed): the round is not paired, and verify says so
    victim = next(p for p in (folder / "cells").glob("*.json") if json.loads(p.read_text())["source"] == "src_a")
    rec = json.loads(victim.read_text())
    victim.write_text(json.dumps(rec | {"seed": rec["seed"] + 1}))
    bad = CliRunner().invoke(app, _args(tiny, root))
    assert bad.exit_code == 2 and "not paired" in bad.output and "head seed" in bad.output, bad.output
    assert len(bad.output.strip().splitlines()) == 1


def test_evaluate_meta_rows_take_the_prior_from_the_held_out_intervals() -> None:
    """replay_report.evaluate: with shipped+est's held-out rows as the prior (here right and tight)
    verify keeps its picks at every budget, so its regret is shipped+est's; the no-prior rows stay
    for comparison; every verify row carries its paired comparison with shipped+est."""
    from recommender.verify import replay_report

    kb = synthetic_kb(n_targets=8, n_sources=5, n_seeds=10, seed=3, seed_sd=0.04)
    rows, ivs = [], []
    for t in kb.targets:
        td = target_data(kb, t, list(range(10)), list(range(10)))
        truth = td.truth
        for s, v in truth.items():
            rows.append({"method": "shipped+est", "target": t, "source": s, "score": v, "auc": v})
            g = v - truth[SCRATCH]
            ivs.append({"scenario": "estimates", "target": t, "source": s, "predicted_auc": v, "lo": v - 0.05,
                        "hi": v + 0.05, "predicted_gain": g, "gain_lo": np.nan if s == SCRATCH else g - 0.004,
                        "gain_hi": np.nan if s == SCRATCH else g + 0.004})
    ev = replay_report.evaluate(kb, pd.DataFrame(rows), intervals=pd.DataFrame(ivs))
    s = ev.summary.set_index("row")
    assert [r for r in s.index if r.startswith("verify@")] == ["verify@10%", "verify@25%", "verify@50%", "verify@100%"]
    assert {"no-prior@25%", "no-prior@100%"} <= set(s.index) and s.loc["no-prior@25%", "kind"] == "verify, no prior"
    for r in ("verify@10%", "verify@100%"):
        assert s.loc[r, "mean_regret"] == pytest.approx(s.loc["shipped+est", "mean_regret"])
        assert s.loc[r, "vs"] == "shipped+est" and s.loc[r, "vs_n"] == 4 and s.loc[r, "vs_diff"] == pytest.approx(0)
    assert not ev.picks["displaced"].any() and len(ev.picks) == 4 * 8
    assert "its prior is shipped+est's held-out prediction" in ev.notes[0]
    assert any(n.startswith("Goal: verify, at every budget") for n in ev.notes)
    json.dumps(ev.to_dict())
    flat = replay_report.evaluate(kb, pd.DataFrame(rows))  # no intervals: a flat prior, still anchored
    assert "a flat prior" in flat.notes[0]


def test_pick_text_names_a_flat_prior_whether_or_not_the_first_is_displaced() -> None:
    from recommender.verify.posterior import pick_text

    rows = {"a": {"p_beats_leader": 0.0}, "b": {"p_beats_leader": 0.96}}
    kept = {"pick": "a", "leader": "a", "rows": {**rows, "b": {"p_beats_leader": 0.4}}, "threshold": 0.9,
            "displaced": False}
    moved = {"pick": "b", "leader": "a", "rows": rows, "threshold": 0.9, "displaced": True}
    for s in (kept, moved):
        assert "flat prior" in pick_text(s, "none") and "flat prior" not in pick_text(s)
    assert pick_text(moved, "none") == ("pick: b, better than the predicted first a (its prediction has no "
                                        "interval: a flat prior) with posterior probability 0.96 (≥ 0.90)")
    assert pick_text(kept) == ("pick: a, the predicted first: no challenger is better with posterior "
                               "probability ≥ 0.90; the closest, b, 0.40")


def test_verify_seeds_follow_the_folders_content_not_its_path() -> None:
    a = PairedCell("finetune", "src", "/one/place/folder", 0, "h", "fp123")
    b = PairedCell("finetune", "src", "/another/place/folder", 0, "h", "fp123")
    assert a.seed == b.seed and a.key == b.key
    assert a.seed != PairedCell("finetune", "src", "/one/place/folder", 0, "h", "fp999").seed
    # without an identity the spec names it, as a KB cell's
    assert PairedCell("finetune", "src", "t", 0, "h").key == Cell("finetune", "src", "t", 0, "h").key
