"""Evidence that cannot carry a verdict gets none, and the default output fits one screen.

On 40 random-noise images with one class of a single image, `recommend` once read "ham10000_derm
is expected to beat training from scratch by +0.030 AUC [+0.001, +0.059]". Such a folder must
get a warning, its estimates marked unreliable and kept out of the order, and no gain claimed.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from experiments import artifacts_dir
from recommender.guard import MIN_LABELLED, MIN_PER_CLASS, label_problems

MODEL = artifacts_dir() / "models" / "local" / "manifest.json"
needs_local = pytest.mark.skipif(not MODEL.exists(), reason="KB local's shipped model is absent")


def test_label_problems_names_each_rule_at_its_threshold():
    ok = {"class_counts": {"a": MIN_PER_CLASS, "b": MIN_LABELLED}}
    assert label_problems(ok) == []
    assert label_problems({"class_counts": {}}) == []  # unlabelled: no estimates, nothing to guard
    small = label_problems({"class_counts": {"a": MIN_PER_CLASS - 1, "b": 30}})
    assert len(small) == 1 and "fewer than 5 images: a (4)" in small[0]
    few = label_problems({"class_counts": {"a": 9, "b": 10}})  # 19 < 20 labelled images
    assert len(few) == 1 and "19 labelled images" in few[0]
    one = label_problems({"class_counts": {"a": 40, "b": 0}})
    assert any("1 class with images" in p for p in one) and any("b (0)" in p for p in one)


def _noise_folder(root, n_big: int = 39, n_small: int = 1):  # noqa: ANN001
    rng = np.random.default_rng(0)
    for c, n in (("big", n_big), ("tiny", n_small)):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


@needs_local
def test_noise_with_a_one_image_class_gets_no_gain_claim(tmp_path):
    from recommender.recommend import recommend

    rec = recommend(_noise_folder(tmp_path / "noise"), kb="local")
    assert rec.estimates_reliable is False
    assert any("too thin to estimate from" in n and "tiny (1)" in n for n in rec.notes)
    assert rec.verdict.startswith("no claim:") and "no gain over scratch is claimed" in rec.verdict
    assert rec.gain is None and all(r.get("gain_vs_scratch") is None for r in rec.ranking)
    # the order is the estimate-free one (what the KB ships without estimates), not the estimates'
    from recommender.model import load_recommender

    assert rec.method and load_recommender("local").scenario(estimates=False).method in (
        "static", "residual", "learned")
    # the estimates are still computed and shown (marked), so the user sees why
    assert any(r.get("transferability") for r in rec.ranking)


@needs_local
def test_default_recommend_fits_one_screen_and_wide_has_the_rest():
    from recommender.cli import app

    env = {"COLUMNS": "80"}
    res = CliRunner().invoke(app, ["recommend", "--target", "demo"], env=env)
    assert res.exit_code == 0, res.output
    lines = res.stdout.rstrip("\n").splitlines()
    assert len(lines) <= 45, f"{len(lines)} lines:\n{res.stdout}"
    assert max(len(x) for x in lines) <= 80
    assert "higher = should transfer better" not in res.stdout  # the estimates table: --wide only
    assert "verdict:" in res.stdout and "more sources in --wide" in res.stdout
    wide = CliRunner().invoke(app, ["recommend", "--target", "demo", "--wide"], env=env)
    assert wide.exit_code == 0
    assert "higher = should transfer better" in wide.stdout and "chosen by nested selection" in wide.stdout
    assert len(wide.stdout.splitlines()) > len(lines)
