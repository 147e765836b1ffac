"""One vocabulary for imaging modality, whoever wrote it: DICOM tags, KB cards, the shared sets.

A DICOM folder says ``CR`` or ``MR``; the Juodelyte cards say ``x-ray`` and ``fundus
photography``; the shared sets' facts say ``xray``. Compared as raw text they never match,
so every place that compares modalities (same-modality features, the modality prior, the
card distance, the modality code) goes through :func:`modality_set` / :func:`same_modality`.
This module imports nothing, so every catscans package may use it.
"""

from __future__ import annotations

import math
import re

# Canonical names, in the order of the ordinal ``dataset.modality_code`` meta-feature.
CANONICAL: tuple[str, ...] = (
    "natural", "x-ray", "ct", "mri", "ultrasound", "dermoscopy", "fundus", "microscopy",
    "histopathology", "oct", "other", "pet", "nuclear", "endoscopy",
)

# Whole words or phrases (lower case) -> canonical name. DICOM PS3.3 C.7.3.1.1.1 codes included.
SYNONYMS: dict[str, str] = {
    # x-ray: plain radiography, fluoroscopy, angiography, mammography, dental
    "xray": "x-ray", "x ray": "x-ray", "x-rays": "x-ray", "radiograph": "x-ray", "radiography": "x-ray",
    "chest x-ray": "x-ray", "cxr": "x-ray", "mammography": "x-ray", "mammogram": "x-ray",
    "cr": "x-ray", "dx": "x-ray", "dr": "x-ray", "rf": "x-ray", "xa": "x-ray", "mg": "x-ray",
    "px": "x-ray", "io": "x-ray",
    "computed tomography": "ct", "abdominal ct": "ct", "cta": "ct",
    "mr": "mri", "magnetic resonance": "mri", "magnetic resonance imaging": "mri",
    "us": "ultrasound", "sonography": "ultrasound", "ultrasonography": "ultrasound",
    "derm": "dermoscopy", "dermatoscopy": "dermoscopy", "dermatoscope": "dermoscopy",
    "dermatoscopic": "dermoscopy", "dermatology": "dermoscopy",
    "retina": "fundus", "fundus camera": "fundus", "fundus photography": "fundus", "op": "fundus",
    "gm": "microscopy", "blood cell microscope": "microscopy", "blood": "microscopy",
    "cytology": "microscopy", "cells": "microscopy",
    "sm": "histopathology", "pathology": "histopathology", "histology": "histopathology",
    "colon pathology": "histopathology", "whole slide": "histopathology",
    "opt": "oct", "retinal oct": "oct", "optical coherence tomography": "oct",
    "pt": "pet", "nm": "nuclear", "es": "endoscopy",
    "photo": "natural", "photograph": "natural", "photography": "natural", "texture": "natural",
    "texture photograph": "natural", "xc": "natural",
    "ot": "other",
}
_UNKNOWN = {"", "mixed", "multiple", "various", "unknown", "nan", "none", "n/a"}
_SPLIT = re.compile(r"\s*(?:/|,|;|\+|&|\band\b)\s*")
_TOKENS = re.compile(r"[^a-z\-]+")


def _one(part: str) -> str | None:
    """Canonical name of one modality phrase; the phrase itself when it is outside the vocabulary."""
    part = part.strip()
    if part in _UNKNOWN:
        return None
    if part in CANONICAL:
        return part
    if part in SYNONYMS:
        return SYNONYMS[part]
    for tok in _TOKENS.split(part):  # "fundus photography", "texture photograph"
        tok = SYNONYMS.get(tok, tok)
        if tok in CANONICAL:
            return tok
    return part  # unrecognised but consistent: two "digits" cards still match


def modality_list(modality: object) -> list[str]:
    """Canonical modalities in the order written ("ct/mr/ultrasound" -> [ct, mri, ultrasound])."""
    if modality is None or (isinstance(modality, float) and math.isnan(modality)):
        return []
    text = str(modality).strip().lower()
    if text in _UNKNOWN:
        return []
    whole = _one(text) if text in SYNONYMS or text in CANONICAL else None
    parts = [whole] if whole else [_one(p) for p in _SPLIT.split(text)]
    return list(dict.fromkeys(p for p in parts if p))


def modality_set(modality: object) -> frozenset[str]:
    """Canonical modalities of a card or DICOM tag; empty when unknown or 'mixed'."""
    return frozenset(modality_list(modality))


def canonical_modality(modality: object) -> str:
    """One comparable string: 'x-ray' for 'CR', 'DX', 'xray' or 'X-Ray'; '' when unknown;
    several modalities joined with '/' in sorted order."""
    return "/".join(sorted(modality_set(modality)))


def same_modality(a: object, b: object) -> float:
    """1.0 when the two share a modality, 0.0 when both are known and share none, NaN when
    either is unknown (unknown is not evidence of a difference)."""
    sa, sb = modality_set(a), modality_set(b)
    if not sa or not sb:
        return math.nan
    return float(bool(sa & sb))
