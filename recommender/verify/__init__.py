"""Measure instead of predict: `catscans verify` fine-tunes a shortlist on the user's labelled
images under successive halving and compares it with paired bootstrap intervals.

- ``run``: the orchestration (KB protocol and checkpoints, cells through a backend, resume);
- ``halving``: the budgeted successive-halving schedule, shared with the replay benchmark;
- ``stats``: weighted AUC and the paired bootstrap over test images and seeds;
- ``posterior``: the prediction as prior and the measurements as likelihood (normal–normal),
  P(best), expected regret, the tied set and the pick rule; ``pairing``: paired by design;
- ``verdict``: the words; ``save``: ``--save-to-kb``; ``replay``: verify replayed on a KB's
  per-seed records (benchmarks/verify_budget.py).
"""

from __future__ import annotations

from recommender.verify.run import (
    VerifyError,
    VerifyResult,
    kb_protocol,
    level_protocol,
    parse_budget,
    verify,
)
from recommender.verify.verdict import verdict

__all__ = ["VerifyError", "VerifyResult", "kb_protocol", "level_protocol", "parse_budget", "verdict", "verify"]
