"""Issue 13 'wrong or inert' inputs: a user target's resolution and modality reach the
meta-model as the KB describes them, and explanations name the features they explain."""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path

import numpy as np
import pytest
from _makers import labelled_png_folder, write_dicom
from test_meta_dataset import make_synthetic_kb

from imagesets import read_imageset
from imagesets.modality import canonical_modality, modality_set, same_modality
from meta_features import domain_distance, modality_code
from recommender.explain import PUBLIC_WEIGHTS, describe_feature
from recommender.model import build_meta_dataset, new_target_rows
from recommender.model.meta_dataset import native_resolution


# -- 1. resolution -----------------------------------------------------------------------------
def test_native_resolution_reads_the_card_keys():
    assert native_resolution({"h_min": 10, "h_median": 512.0, "h_max": 600, "w_median": 256.0}, 28) == 384
    assert native_resolution({}, 28) == 28
    assert native_resolution({"median_height": 512, "median_width": 512}, 28) == 28  # not card keys


def test_recommend_target_card_carries_the_native_resolution(tmp_path: Path):
    """recommend read median_height/median_width, which cards never have: every target was 28 px."""
    from recommender.recommend import _target_card_for_model

    root = labelled_png_folder(tmp_path / "t", n_per_class=6, side=96)
    s = read_imageset(root, side=28, channels="keep")
    assert s.card.native_size["h_median"] == 96
    assert _target_card_for_model(s)["resolution"] == 96


# -- 2. modality: one vocabulary -------------------------------------------------------------
@pytest.mark.parametrize(("raw", "canon"), [
    ("CR", "x-ray"), ("DX", "x-ray"), ("DR", "x-ray"), ("MG", "x-ray"), ("xray", "x-ray"), ("X-Ray", "x-ray"),
    ("MR", "mri"), ("mri", "mri"), ("CT", "ct"), ("US", "ultrasound"), ("ultrasound", "ultrasound"),
    ("fundus photography", "fundus"), ("fundus", "fundus"), ("dermoscopy", "dermoscopy"),
    ("microscopy", "microscopy"), ("histopathology", "histopathology"), ("oct", "oct"),
    ("photograph", "natural"), ("texture photograph", "natural"), ("mixed", ""), ("", ""),
])
def test_canonical_modality(raw: str, canon: str):
    assert canonical_modality(raw) == canon


def test_same_modality_matches_dicom_codes_to_kb_words():
    assert same_modality("CR", "x-ray") == 1.0 and same_modality("MR", "mri") == 1.0
    assert same_modality("US", "ct/mr/ultrasound") == 1.0  # a multi-modality source
    assert same_modality("CT", "x-ray") == 0.0
    assert math.isnan(same_modality("mixed", "ct")) and math.isnan(same_modality(None, "ct"))
    assert modality_set("ct/mr/ultrasound") == {"ct", "mri", "ultrasound"}
    assert modality_code("CR") == modality_code("x-ray") == modality_code("xray")
    card = {"domain": "medical", "channels": 1}
    assert domain_distance(card | {"modality": "MR"}, card | {"modality": "mri"}) == 0
    assert domain_distance(card | {"modality": "US"}, card | {"modality": "ct/mr/ultrasound"}) == 0


def test_dicom_modality_reaches_the_same_modality_features():
    """A DICOM 'CR' target against KB sources carded 'x-ray' (t_a, t_b) and 'ct' (the rest).

    Compared as raw text, 'cr' never equalled 'x-ray': pair_same_modality was 0 for every
    source and the modality prior was NaN."""
    md = build_meta_dataset(make_synthetic_kb())
    card = {"name": "user", "domain": "medical", "modality": "CR", "n_images": 200, "n_classes": 2,
            "channels": 1, "resolution": 512, "task": "binary"}
    rows = new_target_rows(md, card, None, None).set_index("source")
    assert rows.loc[["t_a", "t_b"], "pair_same_modality"].eq(1.0).all()
    assert rows.loc[["t_c", "t_d"], "pair_same_modality"].eq(0.0).all()
    assert rows["fold_modality_prior"].notna().all()
    mri = new_target_rows(md, card | {"modality": "MR"}, None, None)
    assert mri["pair_same_modality"].eq(0.0).all() and mri["fold_modality_prior"].isna().all()


def test_dicom_folder_modality_to_model_card(tmp_path: Path):
    from recommender.recommend import _target_card_for_model

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        for i in range(5):
            write_dicom(tmp_path / "d" / cls / f"{i}.dcm", rng.normal(800, 100, (32, 32)).clip(0, 4095),
                        modality="CR")
    card = _target_card_for_model(read_imageset(tmp_path / "d", side=28, channels="keep"))
    assert same_modality(card["modality"], "x-ray") == 1.0 and card["resolution"] == 32


# -- 3. explanations --------------------------------------------------------------------------
def test_explain_matches_pair_absdiff_features():
    """The meta-dataset names |src − tgt| differences pair_absdiff_<feature>; explain looked for
    'absdiff_' at the start and never saw them."""
    assert describe_feature("pair_absdiff_stats.hist_entropy") == "source–target gap in intensity-histogram entropy"
    assert describe_feature("pair_absdiff_stats.rms_contrast").startswith("source–target gap in ")
    # substring lookups must not turn 'total_variance' into NCE or 'fu' into anything
    assert "NCE" not in describe_feature("pair_absdiff_deep.total_variance")
    assert describe_feature("pair_nce") == "NCE transferability"
    assert describe_feature("pair_fu") == "feature-reuse score (study)"
    assert describe_feature("pair_lp_tz").startswith("linear-probe accuracy")


def test_explain_names_the_imagenet_weights_the_model_factory_loads():
    from experiments import models

    loaded = set(re.findall(r"IMAGENET1K_V\d", inspect.getsource(models)))
    shown = set(re.findall(r"IMAGENET1K_V\d", PUBLIC_WEIGHTS["imagenet"]))
    assert loaded and shown == loaded
