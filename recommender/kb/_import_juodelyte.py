"""Importer for Juodelyte et al. 2024 (15 sources x 12 MedMNIST targets, ResNet-18).

The published cell (``aucs_dataset.csv``) is the test AUC of one fine-tuning run out of a
120-config hyper-parameter grid (batch size x lr x momentum x weight decay). We keep the
cell under the manifest metric ``roc_auc`` so ``matrix()`` equals the paper's table, and
every grid run under ``roc_auc_run`` so the spread across runs is available. The import
also checks which run the paper picked (the one with the lowest validation loss) and
records how many cells follow that rule.

Pair features: the study's LogME (``logme_dataset.csv``) and its seven other estimators
(``estimators/<name>_dataset.csv``: feature reuse, linear probe, LEEP, N-LEEP, PARC, NCTI,
SFDA), each a ``transferability`` feature with its file in the provenance, so they are
meta-model inputs and ``estimate:<name>`` baselines in ``evaluate-meta``. organamnist,
organcmnist and organsmnist are three planes of the same abdominal CT volumes, so the
manifest declares them twins (one leave-one-group-out group).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.knowledge_base import KnowledgeBase
from recommender.kb._import_common import (
    KBImportError,
    cards_frame,
    check_count,
    make_records,
    read_study_csv,
    require_columns,
    wide_to_long,
)

NAME = "juodelyte2024"
STUDY = "arXiv:2412.20172"  # in every record; the title is in the manifest
TITLE = "Juodelyte et al. 2024, On dataset transferability in medical image classification"
REPO = "DovileDo/transferability-in-medical-imaging"
COMMIT = "7e308c4998e98d5781fbac5cdde2fa7c0002977d"
ARCH = "resnet18"
PROTOCOL = ("fine-tune whole ResNet-18 at 224 px on 100 images per class of the target; "
            "cell = test AUC of the grid run with the lowest val loss")
TARGETS = ["bloodmnist", "breastmnist", "chestmnist", "dermamnist", "octmnist", "organamnist",
           "organcmnist", "organsmnist", "pathmnist", "pneumoniamnist", "retinamnist", "tissuemnist"]
SOURCES = ["imagenet", "radimagenet", "medmnist", *TARGETS]
# The shared .npz a KB dataset was measured on, or stands for (see ../shared/data/SOURCES.md).
IMAGE_SETS = {"pneumoniamnist": "pneumoniamnist", "breastmnist": "breastmnist",
              "retinamnist": "retinamnist", "dermamnist": "ham10000_derm", "bloodmnist": "pbc_blood"}
RUN_FILE = "finetune_runs/fined_{short}.csv"
N_CELLS = len(SOURCES) * len(TARGETS) - len(TARGETS)  # 168: self-pairs are empty
# The study's estimator files beside logme_dataset.csv (kb/README.md), same wide layout.
ESTIMATOR_FILES = {"fu": "feature reuse", "lp": "linear probe", "leep": "LEEP", "nleep": "N-LEEP",
                   "parc": "PARC", "ncti": "NCTI", "sfda": "SFDA"}
ESTIMATOR_DIR = "estimators"
# Axial, coronal and sagittal slices of the same LiTS CT volumes (MedMNIST v2 paper): near-
# duplicates that must be held out together. Pairs, as KnowledgeBase.groups reads them.
TWINS = [["organamnist", "organcmnist"], ["organamnist", "organsmnist"], ["organcmnist", "organsmnist"]]

# Modality from MedMNIST's own description text, first match wins.
_MODALITY_RULES = [
    ("x-ray", "x-ray"), ("optical coherence tomography", "oct"), ("fundus", "fundus photography"),
    ("ultrasound", "ultrasound"), ("computed tomography", "ct"), ("dermatoscopic", "dermoscopy"),
    ("histology", "histopathology"), ("cells", "microscopy"),
]


def _modality(description: str) -> str:
    d = description.lower()
    for key, modality in _MODALITY_RULES:
        if key in d:
            return modality
    return ""


def _medmnist_info() -> tuple[str, dict]:
    """(version, INFO) of the ``medmnist`` package, via imagesets' one loader of that table."""
    from imagesets import UserError, medmnist_info

    try:
        info, _root, version = medmnist_info()
    except UserError as exc:
        raise KBImportError("the juodelyte2024 cards need the 'medmnist' package "
                            "(pip install -e '.[medmnist]')") from exc
    return version, info


def medmnist_cards() -> list[dict]:
    """Cards of the 12 MedMNIST 2D sets from the ``medmnist`` package's INFO (28 px release)."""
    version, INFO = _medmnist_info()

    cards = []
    for flag in TARGETS:
        info = INFO[flag]
        cards.append({
            "name": flag, "role": "both", "domain": "medical",
            "modality": _modality(info["description"]),
            "n_images": int(sum(info["n_samples"].values())), "n_classes": len(info["label"]),
            "channels": int(info["n_channels"]), "resolution": 28, "task": info["task"],
            "licence": info["license"], "image_set": IMAGE_SETS.get(flag, ""),
            "provenance": f"medmnist {version} INFO['{flag}']; the study fine-tuned at 224 px",
        })
    return cards


def _other_cards() -> list[dict]:
    return [
        {"name": "imagenet", "role": "source", "domain": "natural", "modality": "photograph",
         "n_images": 1281167, "n_classes": 1000, "channels": 3, "task": "multi-class",
         "licence": "ImageNet terms of access (research use)",
         "provenance": f"{STUDY}; ImageNet ILSVRC-2012 train set (1.28M images, 1000 classes)"},
        {"name": "radimagenet", "role": "source", "domain": "medical", "modality": "ct/mr/ultrasound",
         "n_images": 1350000, "n_classes": 165, "task": "multi-class",
         "licence": "RadImageNet terms (research use)",
         "provenance": f"{STUDY}; RadImageNet (Mei et al. 2022), ~1.35M CT/MR/US images, 165 classes"},
        {"name": "medmnist", "role": "source", "domain": "medical", "modality": "mixed",
         "task": "multi-class",
         "licence": "CC BY 4.0 / CC BY-NC 4.0 (per MedMNIST set)",
         "provenance": (f"{STUDY}; all 12 MedMNIST 2D sets except the target (leave-one-out), "
                        "so its content differs per target; size and classes not fixed")},
    ]


def _published_cells(src: Path) -> pd.DataFrame:
    fname = "aucs_dataset.csv"
    wide = read_study_csv(src / fname)
    require_columns(wide, ["source", *TARGETS], fname)
    unknown = sorted(set(wide["source"]) - set(SOURCES))
    if unknown:
        raise KBImportError(f"{fname}: unexpected source(s) {', '.join(unknown)}")
    long = wide_to_long(wide[["source", *TARGETS]], fname)
    check_count(len(long), N_CELLS, f"{fname} filled cells")
    if (long["source"] == long["target"]).any():
        raise KBImportError(f"{fname}: has self-pair cells; the released table leaves them empty")
    return long


def _runs(src: Path) -> pd.DataFrame:
    """Every finished grid run of the dataset study (not the ``*_imnet`` architecture study)."""
    frames = []
    for t in TARGETS:
        short = t.removesuffix("mnist")
        fname = RUN_FILE.format(short=short)
        d = read_study_csv(src / fname, index_col_ok=False)
        require_columns(d, ["Run ID", "Status", "source_flag", "target_flag", "batch_size", "lr",
                            "momentum", "wd", "test_auc", "val_loss"], fname)
        d = d[(d["Status"] == "FINISHED") & d["test_auc"].notna()].copy()
        if set(d["target_flag"]) != {t}:
            raise KBImportError(f"{fname}: target_flag is not only '{t}'")
        d["file"] = fname
        frames.append(d)
    runs = pd.concat(frames, ignore_index=True)
    runs = runs.rename(columns={"source_flag": "source", "target_flag": "target", "test_auc": "value"})
    runs["protocol"] = (
        "grid run " + runs["Run ID"].astype(str).str[:12] + ": batch_size=" + runs["batch_size"].astype(str)
        + " lr=" + runs["lr"].astype(str) + " momentum=" + runs["momentum"].astype(str)
        + " wd=" + runs["wd"].astype(str) + " val_loss=" + runs["val_loss"].map("{:.6g}".format)
    )
    return runs.sort_values(["target", "source", "Run ID"], kind="mergesort").reset_index(drop=True)


def selection_rule_check(cells: pd.DataFrame, runs: pd.DataFrame) -> tuple[int, int]:
    """How many published cells equal the test AUC of their lowest-val-loss run (and of any run)."""
    best = runs.loc[runs.groupby(["source", "target"])["val_loss"].idxmin(), ["source", "target", "value"]]
    m = cells.merge(best, on=["source", "target"], how="left", suffixes=("", "_best"))
    n_rule = int(np.isclose(m["value"], m["value_best"], rtol=0, atol=1e-12).sum())
    any_hit = 0
    for (s, t), g in runs.groupby(["source", "target"]):
        v = cells[(cells["source"] == s) & (cells["target"] == t)]["value"]
        if len(v) and np.isclose(g["value"].to_numpy(), v.iloc[0], rtol=0, atol=1e-12).any():
            any_hit += 1
    return n_rule, any_hit


def _pair_file(src: Path, rel: str, feature: str) -> pd.DataFrame:
    """One wide (source x target) score file of the study as transferability pair-feature rows."""
    long = wide_to_long(read_study_csv(src / rel), rel)
    unknown = sorted(set(long["source"]) - set(SOURCES)) + sorted(set(long["target"]) - set(TARGETS))
    if unknown:
        raise KBImportError(f"{rel}: unexpected source/target name(s) {', '.join(unknown)}")
    return pd.DataFrame({
        "source": long["source"], "target": long["target"], "feature": feature,
        "value": long["value"].astype(float), "kind": "transferability",
        "provenance": f"{STUDY}; {rel} @ {REPO}@{COMMIT[:7]}",
    })


def import_juodelyte2024(src: str | Path) -> KnowledgeBase:
    """Transcribe ``../shared/data/kb/juodelyte2024`` into a KnowledgeBase (not yet saved)."""
    src = Path(src)
    cells = _published_cells(src)
    records = [make_records(cells, metric="roc_auc", architecture=ARCH, protocol=PROTOCOL,
                            study=STUDY, file="aucs_dataset.csv", commit=COMMIT)]
    runs = _runs(src)
    run_cells = runs[["source", "target"]].drop_duplicates()
    check_count(len(run_cells), N_CELLS, "finetune_runs (source, target) pairs")
    records.append(make_records(runs, metric="roc_auc_run", architecture=ARCH,
                                protocol=runs["protocol"], study=STUDY, file=runs["file"], commit=COMMIT))
    n_rule, n_any = selection_rule_check(cells, runs)

    logme = _pair_file(src, "logme_dataset.csv", "logme")
    estimators = {f: _pair_file(src, f"{ESTIMATOR_DIR}/{f}_dataset.csv", f) for f in ESTIMATOR_FILES}
    pair = pd.concat([logme, *estimators.values()], ignore_index=True)
    datasets = cards_frame(_other_cards() + medmnist_cards())
    per_cell = runs.groupby(["source", "target"]).size()
    manifest = {
        "name": NAME,
        "description": ("Juodelyte et al. 2024: ImageNet, RadImageNet, MedMNIST-minus-target and the 12 "
                        "MedMNIST 2D sets as sources for the 12 MedMNIST targets, ResNet-18 ROC-AUC"),
        "metric": "roc_auc", "run_metric": "roc_auc_run",
        "run_metric_note": ("roc_auc_run = test AUC of every finished run of the 120-config "
                            "hyper-parameter grid (not seeds); its spread is hyper-parameter sensitivity"),
        "architecture": ARCH, "protocol": PROTOCOL, "self_pairs": False,
        "provenance": {"study": STUDY, "title": TITLE, "repository": REPO, "commit": COMMIT, "licence": "MIT",
                       "files": ["aucs_dataset.csv", "logme_dataset.csv", "finetune_runs/fined_<target>.csv",
                                 *(f"{ESTIMATOR_DIR}/{f}_dataset.csv" for f in ESTIMATOR_FILES)]},
        "sources": SOURCES, "targets": TARGETS,
        "twins": TWINS,
        "twins_note": ("organamnist/organcmnist/organsmnist: axial/coronal/sagittal views of the same "
                       "CT volumes, held out together in every leave-one-group-out evaluation"),
        "estimators": {f: f"{name} ({ESTIMATOR_DIR}/{f}_dataset.csv)" for f, name in ESTIMATOR_FILES.items()},
        "checks": {
            "cells": f"{len(cells)} filled cells = 15 x 12 - 12 self-pairs",
            "selection_rule": (f"{n_rule}/{len(cells)} published cells equal the test AUC of the grid run "
                               f"with the lowest val_loss; {n_any}/{len(cells)} equal some run's test AUC"),
            "runs_per_cell": f"min {int(per_cell.min())}, max {int(per_cell.max())}, total {len(runs)}",
            "logme_cells": f"{len(logme)} (self-pairs included as published; chestmnist has none)",
            "estimator_cells": ", ".join(f"{f} {len(e)}" for f, e in estimators.items())
            + " (as published: 11 targets, chestmnist has none; lp and ncti leave self-pairs empty)",
        },
    }
    return KnowledgeBase(name=NAME, records=pd.concat(records, ignore_index=True), datasets=datasets,
                         manifest=manifest, pair_features=pair)
