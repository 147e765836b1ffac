"""Transferability of *training from scratch*: every estimator scored on random initialisations.

The estimators rank sources by what a checkpoint's features say about a target. Scratch
has no checkpoint, so without a value of its own it is placed by a prior alone, and where
it lands decides a ranking's quality on targets where pretraining does not help. Here the
same architecture at random initialisation stands in for scratch: several seeded inits
(BatchNorm in eval mode, so features are a fixed random projection), each scored with the
same estimators on the same rows, averaged, with their spread. Deterministic per seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imagesets import ImageSet

__all__ = ["ScratchScores", "score_random_init", "SCRATCH_INITS"]

SCRATCH_INITS = 5
_HEAD_CLASSES = 10  # a random head: LEEP/NCE see a random "source label" distribution


@dataclass
class ScratchScores:
    mean: dict[str, float]
    sd: dict[str, float]
    n_inits: int

    def provenance(self, what: str) -> str:
        spread = ", ".join(f"{k} sd {v:.4g}" for k, v in sorted(self.sd.items()))
        return f"{what}: mean of {self.n_inits} seeded random inits ({spread})"


def score_random_init(arch: str, in_chans: int, side: int, imageset: ImageSet, *, n_inits: int = SCRATCH_INITS,
                      max_images: int = 1000, random_state: int = 0) -> ScratchScores:
    """Every estimator for ``n_inits`` random inits of ``arch`` on a labelled ImageSet."""
    import torch

    from experiments.data import stable_seed
    from experiments.models import create_model
    from meta_features._checkpoint_features import source_outputs
    from meta_features.transferability import estimate_all

    meta = {"arch": arch, "in_chans": int(in_chans), "side": int(side), "num_classes": _HEAD_CLASSES}
    per_init: list[dict[str, float]] = []
    for i in range(n_inits):
        torch.manual_seed(stable_seed("scratch-init", arch, in_chans, side, i))
        model = create_model(arch, _HEAD_CLASSES, int(in_chans))
        model.eval()
        out = source_outputs(model, meta, imageset, max_images=max_images, random_state=random_state)
        per_init.append(estimate_all(out.features, out.labels, out.probs, random_state=random_state))
    names = sorted(per_init[0])
    vals = {k: np.array([d.get(k, np.nan) for d in per_init], dtype=float) for k in names}
    mean = {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in vals.items()}
    sd = {k: float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else float("nan") for k, v in vals.items()}
    return ScratchScores(mean=mean, sd=sd, n_inits=n_inits)
