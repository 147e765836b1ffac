"""Importer for the seed study "Cats, not CAT scans" (9 sources x 3 targets, ResNet-50, 5 folds).

Per-fold AUCs become ``roc_auc`` records (fold 1..5), the study's per-fold transfer scores
become ``transfer_score`` records, and the two similarity measures it analysed (Task2Vec
distance, expert distance) become pair features. The import re-derives the correlations
the paper reports (r = -0.11 and +0.24 over 24 pairs) and keeps them in the manifest, so a
wrong transcription shows up as a changed figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import pearsonr

from experiments.knowledge_base import KnowledgeBase
from recommender.kb._import_common import (
    KBImportError,
    cards_frame,
    check_count,
    make_records,
    read_study_csv,
    require_columns,
)

NAME = "cats-scans2021"
STUDY = "arXiv:2107.05940"
TITLE = "van den Brandt et al. 2021, Cats, not CAT scans: a study of dataset similarity in transfer learning"
REPO = "vcheplygina/cats-scans"
COMMIT = "9bc5d8a8e9024a08e954a708b5a18f487d675b94"
ARCH = "resnet50"
PROTOCOL = ("source-pretrained Keras ResNet-50, whole network fine-tuned on the target, "
            "5-fold stratified CV, AUC on the held-out fold (isic: prevalence-weighted one-vs-rest)")
SOURCES = ["imagenet", "stl10", "sti10", "textures", "isic", "chest", "pcam-middle", "pcam-small", "kimia"]
TARGETS = ["isic", "chest", "pcam-middle"]
FOLDS = [1, 2, 3, 4, 5]
N_PAIRS = 24
F_AUC, F_SCORES, F_EXPERT = "auc_folds_means_std.csv", "aucs_scores_distances_experts.csv", "experts_clean.csv"


def _cards() -> list[dict]:
    """Cards from kb/README.md and seed_study.md section 1 (resolution = input side used, if one)."""
    src = f"{STUDY} (seed_study.md section 1)"
    natural = {"role": "source", "domain": "natural", "channels": 3, "task": "multi-class"}
    return [
        {"name": "imagenet", **natural, "modality": "photograph", "n_images": 1281167, "n_classes": 1000,
         "licence": "ImageNet terms of access (research use)",
         "provenance": f"{src}; Keras ResNet50 ImageNet weights, not retrained"},
        {"name": "stl10", **natural, "modality": "photograph", "n_images": 13000, "n_classes": 10,
         "resolution": 96, "licence": "STL-10 terms (research use)",
         "provenance": f"{src}; 5k train + 8k test labelled images, 96 px"},
        {"name": "sti10", **natural, "modality": "photograph", "n_classes": 10, "resolution": 112,
         "licence": "ImageNet terms of access (research use)",
         "provenance": f"{src}; self-made ImageNet subset of 10 texture-like synsets; size not recoverable"},
        {"name": "textures", **natural, "modality": "texture photograph", "n_images": 5640, "n_classes": 47,
         "licence": "DTD (research use)", "image_set": "dtd_10class",
         "provenance": f"{src}; DTD 47 x 120, native 300-640 px; image_set dtd_10class holds 10 of its 47 classes"},
        {"name": "isic", "role": "both", "domain": "medical", "modality": "dermoscopy", "n_images": 10015,
         "n_classes": 7, "channels": 3, "resolution": 112, "task": "multi-class", "licence": "CC BY-NC 4.0",
         "image_set": "ham10000_derm",
         "provenance": f"{src}; ISIC 2018 task 3 train = HAM10000; target input 112 px; "
                       "image_set ham10000_derm is a 1,096-image one-per-lesion subset"},
        {"name": "chest", "role": "both", "domain": "medical", "modality": "x-ray", "n_images": 5856,
         "n_classes": 2, "channels": 1, "resolution": 112, "task": "binary-class", "licence": "CC BY 4.0",
         "image_set": "kermany_cxr",
         "provenance": f"{src}; Kermany paediatric pneumonia CXR (grey, loaded as 3-channel), 112 px; "
                       "image_set kermany_cxr is a subset of the same images"},
        {"name": "pcam-middle", "role": "both", "domain": "medical", "modality": "histopathology",
         "n_images": 100000, "n_classes": 2, "channels": 3, "resolution": 96, "task": "binary-class",
         "licence": "CC0 1.0", "provenance": f"{src}; 100k random PCam patches (Camelyon16), 96 px"},
        {"name": "pcam-small", "role": "source", "domain": "medical", "modality": "histopathology",
         "n_images": 10000, "n_classes": 2, "channels": 3, "resolution": 96, "task": "binary-class",
         "licence": "CC0 1.0", "provenance": f"{src}; 10k random PCam patches, ~30% may overlap pcam-middle"},
        {"name": "kimia", "role": "source", "domain": "medical", "modality": "histopathology",
         "n_images": 960, "n_classes": 20, "channels": 3, "task": "multi-class",
         "licence": "KimiaPath960 terms (research use)",
         "provenance": f"{src}; KimiaPath960, 20 WSI classes x 48 ROIs, 308 x 168 px"},
    ]


def _read_aucs(src: Path) -> pd.DataFrame:
    fold_cols = [f"fold_{k}" for k in FOLDS]
    a = read_study_csv(src / F_AUC)
    require_columns(a, ["source", "target", *fold_cols], F_AUC)
    a = a.dropna(subset=fold_cols, how="all").reset_index(drop=True)
    check_count(len(a), N_PAIRS, f"{F_AUC} measured pairs")
    if a[fold_cols].isna().any().any():
        raise KBImportError(f"{F_AUC}: some measured pair lacks a fold AUC")
    bad = sorted((set(a["source"]) - set(SOURCES)) | (set(a["target"]) - set(TARGETS)))
    if bad:
        raise KBImportError(f"{F_AUC}: unexpected dataset name(s) {', '.join(bad)}")
    return a


def _read_scores(src: Path, aucs: pd.DataFrame) -> pd.DataFrame:
    cols = [f"{p}_{k}" for k in FOLDS for p in ("fold", "score", "distance")]
    s = read_study_csv(src / F_SCORES)
    require_columns(s, ["source", "target", *cols, "expert_distance"], F_SCORES)
    check_count(len(s), N_PAIRS, f"{F_SCORES} pairs")
    m = aucs.merge(s, on=["source", "target"], how="outer", suffixes=("", "_s"), indicator=True)
    if (m["_merge"] != "both").any():
        raise KBImportError(f"{F_SCORES} and {F_AUC} list different pairs")
    diff = max(np.abs(m[f"fold_{k}"] - m[f"fold_{k}_s"]).max() for k in FOLDS)
    if diff > 1e-9:
        raise KBImportError(f"{F_SCORES} fold AUCs differ from {F_AUC} by up to {diff:.2g}")
    return s


def _read_experts(src: Path) -> pd.DataFrame:
    e = read_study_csv(src / F_EXPERT)
    require_columns(e, ["target", "source", "distance"], F_EXPERT)
    e["distance"] = pd.to_numeric(e["distance"], errors="coerce")
    if e["distance"].isna().any():
        raise KBImportError(f"{F_EXPERT}: non-numeric distance")
    return e


def import_cats_scans2021(src: str | Path) -> KnowledgeBase:
    """Transcribe ``../shared/data/kb/cats_scans2021`` into a KnowledgeBase (not yet saved)."""
    src = Path(src)
    aucs = _read_aucs(src)
    scores = _read_scores(src, aucs)
    experts = _read_experts(src)

    def per_fold(df: pd.DataFrame, prefix: str) -> pd.DataFrame:
        long = df.melt(id_vars=["source", "target"], value_vars=[f"{prefix}_{k}" for k in FOLDS],
                       var_name="fold", value_name="value")
        long["fold"] = long["fold"].str.removeprefix(f"{prefix}_").astype(int)
        return long.sort_values(["source", "target", "fold"], kind="mergesort").reset_index(drop=True)

    auc_long = per_fold(aucs, "fold")
    score_long = per_fold(scores, "score")
    common = {"architecture": ARCH, "protocol": PROTOCOL, "study": STUDY, "commit": COMMIT}
    records = pd.concat([
        make_records(auc_long, metric="roc_auc", file=F_AUC, fold=auc_long["fold"], **common),
        make_records(score_long, metric="transfer_score", file=F_SCORES, fold=score_long["fold"], **common),
    ], ignore_index=True)

    dist = scores[[f"distance_{k}" for k in FOLDS]].astype(float).mean(axis=1)
    t2v = dist / dist.max()
    prov = f"{STUDY}; {{f}} @ {REPO}@{COMMIT[:7]}"
    pair = pd.concat([
        pd.DataFrame({"source": scores["source"], "target": scores["target"], "feature": "task2vec_distance",
                      "value": t2v.to_numpy(), "kind": "similarity",
                      "provenance": prov.format(f=F_SCORES) + "; mean of distance_1..5 / its max over 24 pairs"}),
        pd.DataFrame({"source": experts["source"], "target": experts["target"], "feature": "expert_distance",
                      "value": experts["distance"].astype(float), "kind": "expert",
                      "provenance": prov.format(f=F_EXPERT) + "; ordinal 0-6, 0 = same"}),
    ], ignore_index=True)

    # the expert file must agree with the expert column of the scores file
    chk = scores[["source", "target", "expert_distance"]].merge(experts, on=["source", "target"], how="left")
    if not np.allclose(chk["expert_distance"].astype(float), chk["distance"].astype(float)):
        raise KBImportError(f"{F_EXPERT} disagrees with expert_distance in {F_SCORES}")

    gain = scores[[f"score_{k}" for k in FOLDS]].astype(float).mean(axis=1)
    r_t2v, p_t2v = pearsonr(t2v, gain)
    r_exp, p_exp = pearsonr(scores["expert_distance"].astype(float), gain)
    manifest = {
        "name": NAME,
        "description": ("Cats, not CAT scans: 9 natural and medical sources fine-tuned on 3 medical "
                        "targets (ISIC 2018, chest X-ray, PCam-middle), ResNet-50 ROC-AUC per fold"),
        "metric": "roc_auc", "architecture": ARCH, "protocol": PROTOCOL, "self_pairs": True,
        "self_pairs_note": "the target pretrained on itself, the study's reference for transfer_score",
        "provenance": {"study": STUDY, "title": TITLE, "repository": REPO, "commit": COMMIT,
                       "files": [F_AUC, F_SCORES, F_EXPERT]},
        "sources": SOURCES, "targets": TARGETS,
        "checks": {
            "pairs": f"{len(aucs)} measured pairs x 5 folds",
            "task2vec_vs_gain": f"Pearson r = {r_t2v:+.2f} (p = {p_t2v:.2f}) over {len(gain)} pairs; paper -0.11 (p 0.61)",
            "expert_vs_gain": f"Pearson r = {r_exp:+.2f} (p = {p_exp:.2f}) over {len(gain)} pairs; paper +0.24 (p 0.26)",
        },
    }
    return KnowledgeBase(name=NAME, records=records, datasets=cards_frame(_cards()), manifest=manifest,
                         pair_features=pair)
