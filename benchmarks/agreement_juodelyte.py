"""Spearman agreement of a measured KB's per-target source rankings with juodelyte2024.

Run by hand: ``.venv/bin/python benchmarks/agreement_juodelyte.py [KB=local] [reference.csv]``.
Compares the datasets both contain (pneumonia, breast, retina, derma<-ham10000_derm,
blood<-pbc_blood); prints per-target rho with n sources and p, and a pooled rho.
"""

from __future__ import annotations

import sys

import pandas as pd

from experiments import load_kb
from experiments.agreement import juodelyte_matrix, rank_agreement


def main() -> None:
    kb = load_kb(sys.argv[1] if len(sys.argv) > 1 else "local")
    ref = juodelyte_matrix(sys.argv[2] if len(sys.argv) > 2 else None)
    ours = kb.matrix()
    n_rep = kb.records.groupby(["source", "target"]).size()
    table, pooled = rank_agreement(ours, ref)
    pd.set_option("display.width", 160)
    print(f"KB {kb.name}: mean test ROC-AUC over {n_rep.min()}-{n_rep.max()} seeds/folds per cell; "
          f"reference juodelyte2024 aucs_dataset.csv (ResNet-18, 224 px, 100 images/class)")
    print(table.drop(columns=["sources"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    rho, p = pooled.get("spearman_rho", float("nan")), pooled.get("p_value", float("nan"))
    print(f"pooled (AUC centred per target): Spearman rho = {rho:.3f}, p = {p:.3g}, "
          f"over {pooled['n_pairs']} (source, target) pairs in {pooled['n_targets']} targets")


if __name__ == "__main__":
    main()
