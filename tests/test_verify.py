"""`catscans verify`, candidate cards, the paired bootstrap and the verdict.

End to end on a tiny KB made by build-matrix --export-kb (synthetic npz sets, resnet-tiny at
16 px, seconds on CPU), including a SIGKILL mid-run and a resume; the verdict and the
bootstrap on synthetic measurements whose truth is known.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm
from test_build_matrix_e2e import _toy_set
from typer.testing import CliRunner

from experiments import load_kb
from experiments.cells import decode_predictions
from experiments.models import create_model, save_checkpoint
from experiments.store import FolderStore
from recommender.candidates import CandidateError, materialise, resolve_candidate
from recommender.cli import app
from recommender.verify import verdict
from recommender.verify.halving import Budget, n_rounds, successive_halving
from recommender.verify.replay import replay_kb, synthetic_kb
from recommender.verify.run import table_rows
from recommender.verify.stats import Measurement, paired_bootstrap, weighted_auc

REPO = Path(__file__).resolve().parents[1]

TINY = """
name = "tinyv"
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
epochs = 3
batch_size = 32
lr = 0.01
patience = 2
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A KB with two pretrained sources (build-matrix --export-kb) and a user target of 200 images."""
    tmp = tmp_path_factory.mktemp("verify")
    data = tmp / "data"
    data.mkdir()
    _toy_set(data / "src_a.npz", 4, 200, False, 1, True)
    _toy_set(data / "src_b.npz", 3, 150, True, 2, False)
    _toy_set(data / "tgt_c.npz", 2, 120, False, 3, True)
    _toy_set(tmp / "user.npz", 2, 200, True, 9, False)
    (tmp / "tiny.toml").write_text(TINY)
    res = CliRunner().invoke(app, ["build-matrix", "--protocol", str(tmp / "tiny.toml"), "--data-dir", str(data),
                                   "--run-dir", str(tmp / "run"), "--threads", "1", "-q", "--export-kb", "tinyv",
                                   "--kb-out", str(tmp / "kb")])
    assert res.exit_code == 0, res.output
    return {"tmp": tmp, "data": data, "kb": tmp / "kb", "user": tmp / "user.npz"}


def _verify(t: dict, root: Path, *extra: str) -> list[str]:
    return ["verify", "--target", str(t["user"]), "--kb", str(t["kb"]), "--data-dir", str(t["data"]),
            "--run-root", str(root), "--threads", "1", "-q", *extra]


def _store(root: Path) -> FolderStore:
    (folder,) = list((root / "runs" / "verify").iterdir())
    return FolderStore(folder)


def test_verify_end_to_end_resumes_and_saves_to_kb(tiny: dict) -> None:
    root = tiny["tmp"] / "e2e"
    res = CliRunner().invoke(app, _verify(tiny, root, "--budget", "0.6", "--seeds", "3", "--format", "json"))
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    rows = {r["candidate"]: r for r in out["rows"]}
    assert set(rows) == {"src_a", "src_b", "scratch"}  # the KB's 2 sources + scratch, none dropped
    last = max(r["round"] for r in out["rows"])
    assert out["rounds"][-1]["level"] == {"data": 1.0, "epochs": 1.0}  # the last round is the KB protocol
    assert out["rounds"][-1]["protocol_hash"] == out["protocol"].split("@")[1]
    for r in out["rows"]:
        assert r["lo"] <= r["auc"] <= r["hi"] and 0 <= r["auc"] <= 1
        assert (r["vs_scratch"] is None) == (r["candidate"] == "scratch")
    assert rows["scratch"]["round"] == last  # the reference is carried to the end
    assert out["compute"]["fraction_planned"] <= 0.6 + 1e-9 and out["verdict"]
    # every fine-tune is one stored cell with its test predictions; they reproduce the stored AUC
    store = _store(root)
    recs = store.records()
    assert len(recs) == out["compute"]["cells"]
    for rec in recs:
        p, y = decode_predictions(rec["test_predictions"])
        assert len(y) == rec["n_test"] and abs(weighted_auc(p, y)[0] - rec["value"]) < 2e-3
    # the full round's per-seed values are the stored records of the KB protocol
    full = [r for r in recs if r["protocol_hash"] == out["protocol"].split("@")[1]]
    assert {r["source"] for r in full} == {r["candidate"] for r in out["rows"] if r["round"] == last}
    # rerun: nothing recomputed, the same table
    again = CliRunner().invoke(app, _verify(tiny, root, "--budget", "0.6", "--seeds", "3", "--format", "json"))
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["rows"] == out["rows"] and len(store.records()) == len(recs)

    # --save-to-kb appends the full-protocol cells once, with protocol hash and fingerprint
    kb_copy = tiny["tmp"] / "kb_copy"
    shutil.copytree(tiny["kb"], kb_copy)
    n0 = len(load_kb(kb_copy).records)
    for _ in range(2):
        res = CliRunner().invoke(app, _verify(tiny, root, "--budget", "0.6", "--seeds", "3", "--save-to-kb",
                                              str(kb_copy), "--format", "json"))
        assert res.exit_code == 0, res.output
    kb = load_kb(kb_copy)
    added = kb.records[kb.records["study"] == "catscans verify"]
    assert len(kb.records) == n0 + len(added) and len(added) == sum(len(r["per_seed"]) for r in out["rows"]
                                                                    if r["round"] == last)
    assert set(added["protocol"]) == {out["protocol"]} and set(added["file"]) == {f"fingerprint:{out['fingerprint']}"}
    assert "user" in kb.targets and kb.manifest["verified"]["user"]["fingerprint"] == out["fingerprint"]


def test_verify_resumes_after_sigkill(tiny: dict) -> None:
    root = tiny["tmp"] / "kill"
    cmd = [sys.executable, "-m", "recommender", *_verify(tiny, root, "--budget", "1", "--seeds", "4")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        folders = list((root / "runs" / "verify").glob("*/cells")) if (root / "runs").exists() else []
        if folders and len(list(folders[0].glob("*.json"))) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "verify finished before it could be killed: " + proc.stderr.read().decode()[-300:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {r["key"]: r for r in _store(root).records()}
    assert 3 <= len(before) < 12
    res = CliRunner().invoke(app, _verify(tiny, root, "--budget", "1", "--seeds", "4", "--format", "json"))
    assert res.exit_code == 0, res.output
    after = _store(root).records()
    keys = [r["key"] for r in after]
    assert len(keys) == len(set(keys)) == 3 * 4  # complete, none duplicated
    for k, r in before.items():  # finished cells kept as they were
        assert next(a for a in after if a["key"] == k) == r
    assert json.loads(res.stdout)["compute"]["cells"] == 12


def test_local_weight_file_is_a_candidate(tiny: dict) -> None:
    """A weight file saved by experiments (sidecar) and a bare one (--arch) are carded and fine-tuned."""
    w = tiny["tmp"] / "weights"
    model = create_model("resnet-tiny", 5, 3)
    save_checkpoint(model, w / "mine.safetensors", {"side": 16})
    card = resolve_candidate(str(w / "mine.safetensors")).card()
    assert card["kind"] == "file" and card["arch"] == "resnet-tiny" and card["n_params"] == sum(
        p.numel() for p in model.parameters())
    assert card["weights"] == str((w / "mine.safetensors").resolve()) and len(card["snippet"]) == 3
    bare = w / "bare.safetensors"
    shutil.copy(w / "mine.safetensors", bare)
    with pytest.raises(CandidateError, match="--arch"):
        resolve_candidate(str(bare))
    c = resolve_candidate(str(bare), arch="resnet-tiny")
    ck = materialise(c, tiny["tmp"] / "mat")
    assert json.loads(ck.with_suffix(".json").read_text())["external"] is True
    res = CliRunner().invoke(app, ["recommend", "--explain", str(bare), "--arch", "resnet-tiny"])
    assert res.exit_code == 0 and "parameters" in res.stdout and "load_state_dict" in res.stdout
    root = tiny["tmp"] / "file"
    res = CliRunner().invoke(app, _verify(tiny, root, "--sources", f"src_a,{bare}", "--arch", "resnet-tiny",
                                          "--budget", "1", "--seeds", "1", "--format", "json"))
    assert res.exit_code == 0, res.output
    assert {r["candidate"] for r in json.loads(res.stdout)["rows"]} == {"src_a", c.name, "scratch"}


def test_kb_checkpoint_card_and_refusal_of_other_pretraining(tiny: dict) -> None:
    res = CliRunner().invoke(app, ["recommend", "--explain", "src_a", "--kb", str(tiny["kb"]), "--format", "json"])
    assert res.exit_code == 0, res.output
    card = json.loads(res.stdout)
    assert card["kind"] == "kb" and card["input_size"] == 16 and Path(card["weights"]).is_absolute()
    assert card["snippet"][1].startswith("model, meta = load_checkpoint(")
    bad = tiny["tmp"] / "kb_bad"
    shutil.copytree(tiny["kb"], bad)
    side = bad / "checkpoints" / "src_a.json"
    side.write_text(json.dumps(json.loads(side.read_text()) | {"pretrain_hash": "0123456789abcdef"}))
    res = CliRunner().invoke(app, ["verify", "--target", str(tiny["user"]), "--kb", str(bad), "--run-root",
                                   str(tiny["tmp"] / "bad"), "-q", "--sources", "src_a"])
    assert res.exit_code == 2 and "pretrained with other settings" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_hub_candidates_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    import recommender.candidates as cands

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # an empty cache
    monkeypatch.setattr(cands, "_reachable", lambda url, timeout=3.0: False)  # no network here
    c = resolve_candidate("torchvision:ResNet18_Weights.IMAGENET1K_V1")
    assert c.arch == "resnet18" and c.input_size == 224 and c.n_params == 11_689_512
    assert c.snippet[1] == "model = torchvision.models.resnet18(weights='ResNet18_Weights.IMAGENET1K_V1')"
    with pytest.raises(CandidateError) as e:
        materialise(c, tmp_path / "ck")
    msg = str(e.value)
    assert "not in the local cache" in msg and "offline" in msg and "get_state_dict()" in msg and "\n" not in msg
    with pytest.raises(CandidateError, match="no torchvision weights"):
        resolve_candidate("torchvision:NoSuchNet_Weights.X")
    try:
        import timm  # noqa: F401
    except ImportError:
        res = CliRunner().invoke(app, ["recommend", "--explain", "timm:resnet18"])
        assert res.exit_code == 2 and "timm is not installed" in res.output and "pip install timm" in res.output


def _measure(name: str, mu: float, base: np.ndarray, y: np.ndarray, seeds: int, rng, shared: np.ndarray) -> Measurement:
    out = {}
    for r in range(seeds):
        s = mu * y + shared + base + rng.normal(0, 1, len(y)) + rng.normal(0, 0.05) * y
        p1 = 1 / (1 + np.exp(-s))
        out[r] = (np.stack([1 - p1, p1], 1), y, "d")
    return Measurement(name, out)


def _rows(mus: dict[str, float], n: int = 300, seeds: int = 4, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.int64)
    shared = rng.normal(0, 1, n)  # image difficulty every model sees
    ms = [_measure(k, v, rng.normal(0, 0.3, n), y, seeds, rng, shared) for k, v in mus.items()]
    res = paired_bootstrap(ms, n_boot=500)
    leader = res.names[int(np.argmax(res.point))]
    return table_rows(res, leader)


def test_verdict_when_scratch_wins_says_no_detectable_gain() -> None:
    rows = _rows({"a": 1.0, "b": 0.2, "scratch": 1.05})
    v = verdict(rows)
    assert v.startswith("measured: no detectable gain from pretraining, best source a ")
    assert "over scratch" in v and "Negative transfer" in v and "b" in v.split("Negative transfer")[1]
    assert next(r for r in rows if r["candidate"] == "b")["negative_transfer"]


def test_verdict_when_a_source_clearly_wins() -> None:
    rows = _rows({"a": 1.8, "b": 1.1, "scratch": 0.8})
    v = verdict(rows)
    assert v.startswith("a is best, ahead of b by") and "detectably ahead" in v and "a beats scratch by" in v
    rows = _rows({"a": 1.6, "b": 1.6, "scratch": 0.8}, seed=1)
    v = verdict(rows)
    assert "no detectable difference" in v and "both beat scratch" in v


def test_paired_bootstrap_coverage_in_a_crossed_design() -> None:
    """The 95% intervals of a mean AUC and of a paired difference cover the truth 92-99.5% of the
    time and are as wide as the estimator's spread across replications (the oracle) or up to 40%
    wider, in a crossed design: images and seeds both random, scores binormal with a known
    population AUC. Measured (150 replications x 4 simulation seeds, oracle from 2,000 further
    replications): coverage 0.95-0.98 (mean), 0.96-0.99 (difference); width / oracle 1.08-1.11
    (mean), 1.19-1.23 (difference: the per-seed image noise enters both the image and the seed
    resample). An unpaired bootstrap: difference coverage 0.99-1.00, width 1.64-1.67; one that never
    resamples seeds: coverage 0.91-0.95 / 0.87-0.91, width 0.92-0.94 / 0.85-0.86."""
    rng = np.random.default_rng(0)
    n, m, reps = 120, 4, 150
    mu = {"a": 1.2, "b": 1.0}
    sd_tot = np.sqrt(1 + 0.5**2 + 1)  # shared image effect, model-specific image effect, per-seed noise
    seed_sd = 0.15

    def truth(mu_c: float) -> float:  # E over seeds of the population AUC
        z = np.linspace(-6, 6, 2001)
        return float(np.trapezoid(norm.cdf((mu_c + seed_sd * z) / (np.sqrt(2) * sd_tot)) * norm.pdf(z), z))

    t = {k: truth(v) for k, v in mu.items()}
    y = (np.arange(n) % 2).astype(np.int64)

    def draw(rng: np.random.Generator) -> list[Measurement]:
        shared = rng.normal(0, 1, n)
        ms = []
        for k, v in mu.items():
            own = rng.normal(0, 0.5, n)
            seeds = {}
            for r in range(m):
                s = (v + rng.normal(0, seed_sd)) * y + shared + own + rng.normal(0, 1, n)
                seeds[r] = (np.stack([1 - norm.cdf(s), norm.cdf(s)], 1), y, "d")
            ms.append(Measurement(k, seeds))
        return ms

    # the oracle: the spread of the point estimates (mean AUC of a; a - b) over fresh replications
    orng = np.random.default_rng(12345)
    pts = np.array([[np.mean([weighted_auc(*mm.seeds[r][:2])[0] for r in range(m)]) for mm in draw(orng)]
                    for _ in range(2000)])
    oracle_a = 2 * 1.96 * pts[:, 0].std(ddof=1)
    oracle_d = 2 * 1.96 * (pts[:, 0] - pts[:, 1]).std(ddof=1)
    hit_a = hit_d = 0
    width_a, width_d = [], []
    for _ in range(reps):
        ms = draw(rng)
        res = paired_bootstrap(ms, n_boot=400, seed=int(rng.integers(1 << 30)))
        lo, hi = np.percentile(res.boot[0], [2.5, 97.5])
        hit_a += lo <= t["a"] <= hi
        width_a.append(hi - lo)
        dlo, dhi = np.percentile(res.boot[0] - res.boot[1], [2.5, 97.5])
        hit_d += dlo <= t["a"] - t["b"] <= dhi
        width_d.append(dhi - dlo)
    # the lower bounds kill a bootstrap that never resamples seeds (coverage 0.91, width 0.94 / 0.86)
    assert 0.92 <= hit_a / reps <= 0.995, hit_a / reps
    # the upper bound kills an unpaired bootstrap (difference coverage 1.00); the lower, no seed resampling (0.91)
    assert 0.93 <= hit_d / reps <= 0.995, hit_d / reps
    # width vs the oracle: the lower bounds kill no seed resampling (0.94 / 0.86), the upper an unpaired bootstrap (1.67)
    assert 1.0 <= np.mean(width_a) / oracle_a <= 1.25, np.mean(width_a) / oracle_a
    assert 1.0 <= np.mean(width_d) / oracle_d <= 1.4, np.mean(width_d) / oracle_d


def test_halving_schedule_respects_the_budget() -> None:
    assert n_rounds(4) == 2 and n_rounds(12) == 4 and n_rounds(2) == 1
    for frac in (0.1, 0.25, 0.5):
        spent, srcs = [], [f"s{i}" for i in range(6)]
        bud = Budget(frac * 7 * 10)

        def measure(rnd, bud=bud, spent=spent) -> None:  # noqa: ANN001
            bud.spent += len(rnd.alive) * rnd.seeds * rnd.level.cost
            spent.append((len(rnd.alive), rnd.seeds, rnd.level))
            rnd.values = {s: [float(-i)] * rnd.seeds for i, s in enumerate(rnd.alive)}

        rounds = successive_halving(srcs, "scratch", 10, bud, measure)
        assert bud.spent <= max(frac * 70, sum(a * lv.cost for a, _, lv in spent[:1])) + 1e-9
        assert rounds[-1].level.full and "scratch" in rounds[-1].alive
        assert rounds[-1].alive[:2] == ["s0", "s1"]  # the best two survive
    bud = Budget(70)
    one = successive_halving(srcs, "scratch", 10, bud, lambda r: setattr(r, "values", {}))
    assert len(one) == 1 and one[0].seeds == 10 and one[0].level.full  # the full budget: everything, no halving


def test_replay_at_full_budget_on_the_truth_seeds_has_no_regret() -> None:
    kb = synthetic_kb(n_targets=6, n_sources=5, n_seeds=4)
    same = replay_kb(kb, [1.0], [0, 1], [0, 1], shortlists=("all",), allow_overlap=True)["per_target"]
    assert (same["verify[all]@1"] == 0).all()  # verify sees every seed the truth is made of: it cannot miss
    out = replay_kb(kb, [0.25, 1.0], [0, 1], [2, 3], shortlists=("static", "all"))
    s = out["summary"].set_index("method")
    assert {"static", "estimate:logme", "verify[static]@0.25", "verify[all]@1"} <= set(s.index)
    assert s.loc["verify[all]@1", "compute"] == 1.0 and s["n_targets"].min() == 6
    with pytest.raises(ValueError, match="disjoint"):
        replay_kb(kb, [1.0], [0, 1], [1, 2])


def test_recommend_verify_marks_measured_and_predicted_rows(tiny: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """`recommend --verify`: the KB here has no trained meta-model, so recommend's prediction is stood in
    for (a fixed ranking); verify then runs for real and the table marks which rows are measured."""
    import recommender.recommend as rmod

    def fake(target, kb=None, top=None, progress=False):  # noqa: ANN001, ANN202
        ranking = [{"rank": i + 1, "source": s, "predicted_auc": 0.8 - 0.01 * i, "lo80": 0.7, "hi80": 0.9,
                    "transferability": {}} for i, s in enumerate(["src_b", "scratch", "src_a"])]
        return rmod.Recommendation(str(target), {}, True, str(tiny["kb"]), "test", "static ranking (stand-in)", {},
                                   ranking)

    monkeypatch.setattr(rmod, "recommend", fake)
    monkeypatch.setattr("experiments.backends.os.cpu_count", lambda: 1)  # one torch thread, as the other tests
    monkeypatch.chdir(tiny["tmp"])
    monkeypatch.setenv("CATSCANS_DATA", str(tiny["data"]))
    res = CliRunner().invoke(app, ["recommend", "--target", str(tiny["user"]), "--verify", "--budget", "1",
                                   "--format", "csv"])
    assert res.exit_code == 0, res.output
    import io

    import pandas as pd

    df = pd.read_csv(io.StringIO(res.stdout))
    assert set(df.loc[df["status"] == "measured", "candidate"]) == {"src_a", "src_b", "scratch"}


@pytest.mark.parametrize("extra,needle", [
    (["--budget", "2"], "a fraction must be in (0, 1]"),
    (["--budget", "lots"], "give a fraction of full compute"),
    (["--kb", "juodelyte2024"], "records no protocol"),
    (["--sources", "no_such_source"], "unknown candidate 'no_such_source'"),
])
def test_bad_input_is_one_line_exit_2(tiny: dict, extra: list[str], needle: str) -> None:
    args = _verify(tiny, tiny["tmp"] / "bad_input", *extra)
    if "--kb" in extra:  # the later --kb wins; drop the fixture's
        i = args.index("--kb")
        del args[i:i + 2]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and needle in res.output, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
