"""A synthetic KB with known structure for the nested-selection, interval and ceiling tests.

AUC(source s, target t, seed k) = level_t + quality_s + affinity_{s,t} + seed noise. Every
target is also a source; a derived task (``t1`` from ``t0``) and a twin pair (``t2``/``t3``)
make groups; ``est_good`` is a transferability estimate that sees quality + affinity,
``est_noise`` one that sees nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from experiments.knowledge_base import KnowledgeBase


def synthetic_kb(n_targets: int = 8, n_extra: int = 3, seeds: int = 4, seed: int = 0,
                 noise: float = 0.01, level_sd: float = 0.04, affinity_sd: float = 0.01,
                 groups: bool = True, estimates: bool = True, similarity: bool = True,
                 shift: dict | None = None, name: str = "synth") -> KnowledgeBase:
    """``shift``: {(source, target): delta} added to every seed's AUC of those cells (perturbations)."""
    rng = np.random.default_rng(seed)
    targets = [f"t{i}" for i in range(n_targets)]
    sources = targets + [f"x{i}" for i in range(n_extra)]
    quality = dict(zip(sources, rng.normal(0, 0.02, len(sources)), strict=True))
    level = dict(zip(targets, np.clip(0.85 + rng.normal(0, level_sd, n_targets), 0.55, 0.97), strict=True))
    recs, pf = [], []
    for t in targets:
        for s in sources:
            if s == t:
                continue
            aff = rng.normal(0, affinity_sd)
            base = level[t] + quality[s] + aff + (shift or {}).get((s, t), 0.0)
            for k in range(seeds):
                recs.append({"source": s, "target": t, "metric": "roc_auc",
                             "value": float(base + rng.normal(0, noise)), "fold": -1, "seed": k})
            if estimates:
                pf.append({"source": s, "target": t, "feature": "est_good", "kind": "transferability",
                           "value": quality[s] + aff + rng.normal(0, 0.005), "provenance": "synthetic"})
                pf.append({"source": s, "target": t, "feature": "est_noise", "kind": "transferability",
                           "value": float(rng.normal()), "provenance": "synthetic"})
            if similarity:
                pf.append({"source": s, "target": t, "feature": "sim", "kind": "similarity",
                           "value": float(rng.normal()), "provenance": "synthetic"})
    cards = [{"name": s, "role": "both" if s in targets else "source", "domain": "medical",
              "modality": ("x-ray", "ct", "mri")[i % 3], "n_images": 1000 * (1 + i), "n_classes": 2 + i % 3,
              "channels": 1, "resolution": 28 if i % 2 else 64, "task": "binary"}
             for i, s in enumerate(sources)]
    manifest = {"metric": "roc_auc", "sources": sources, "targets": targets}
    if groups and n_targets >= 4:
        manifest["groups"] = {"t1": "t0"}
        manifest["twins"] = [["t2", "t3"]]
    pair = pd.DataFrame(pf, columns=["source", "target", "feature", "value", "kind", "provenance"])
    return KnowledgeBase(name, pd.DataFrame(recs), pd.DataFrame(cards), manifest, pair_features=pair)
