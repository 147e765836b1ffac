"""A synthetic KB where training from scratch wins on some targets, and its estimates say so.

AUC(source s, target t, seed k) = level_t + quality_s + affinity_{s,t} + seed noise for every
pretrained source; scratch is ``level_t + margin`` on the targets in ``wins`` (it beats every
source there) and ``level_t − margin`` elsewhere. ``est_good`` is a transferability estimate
that sees each cell's truth, scratch's included (as an estimator scored on random inits
would, if it worked); ``est_noise`` sees nothing. Scratch wins on a minority of targets, so
its static prior (its mean standing over the KB's targets) puts it low everywhere: a method
that places scratch by the prior alone gets the ``wins`` targets wrong.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from experiments.knowledge_base import SCRATCH, KnowledgeBase

WINS = ("t0", "t3", "t6")


def scratch_kb(n_targets: int = 10, n_extra: int = 2, seeds: int = 3, seed: int = 0,
               wins: tuple[str, ...] = WINS, margin: float = 0.04, noise: float = 0.004,
               level_sd: float = 0.01, name: str = "scratchy") -> KnowledgeBase:
    """The KB described in the module docstring (no groups: every target its own fold)."""
    rng = np.random.default_rng(seed)
    targets = [f"t{i}" for i in range(n_targets)]
    pretrained = targets + [f"x{i}" for i in range(n_extra)]
    sources = [*pretrained, SCRATCH]
    quality = dict(zip(pretrained, rng.normal(0, 0.015, len(pretrained)), strict=True))
    level = dict(zip(targets, 0.85 + rng.normal(0, level_sd, n_targets), strict=True))
    recs, pf = [], []
    for t in targets:
        for s in sources:
            if s == t:
                continue
            if s == SCRATCH:
                truth = margin if t in wins else -margin
            else:
                truth = quality[s] + rng.normal(0, 0.005)
            for k in range(seeds):
                recs.append({"source": s, "target": t, "metric": "roc_auc",
                             "value": float(level[t] + truth + rng.normal(0, noise)), "fold": -1, "seed": k})
            pf.append({"source": s, "target": t, "feature": "est_good", "kind": "transferability",
                       "value": float(truth + rng.normal(0, 0.002)), "provenance": "synthetic"})
            pf.append({"source": s, "target": t, "feature": "est_noise", "kind": "transferability",
                       "value": float(rng.normal()), "provenance": "synthetic"})
    cards = [{"name": s, "role": "both" if s in targets else "source", "domain": "medical",
              "modality": ("x-ray", "ct")[i % 2], "n_images": 1000 * (1 + i), "n_classes": 2,
              "channels": 1, "resolution": 28, "task": "binary"}
             for i, s in enumerate(pretrained)]
    manifest = {"metric": "roc_auc", "sources": sources, "targets": targets}
    pair = pd.DataFrame(pf, columns=["source", "target", "feature", "value", "kind", "provenance"])
    return KnowledgeBase(name, pd.DataFrame(recs), pd.DataFrame(cards), manifest, pair_features=pair)
