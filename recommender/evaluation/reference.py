"""Agreement of a measured KB with the published study (juodelyte2024) on what they share.

A CPU proxy (small network, 28 px, a few hundred images) can stand in for the study only
as far as it ranks the shared sources alike on the shared targets. This reuses
:func:`experiments.agreement.rank_agreement` (per-target Spearman ρ with p and n sources,
and a pooled ρ over target-centred pairs) with the shipped juodelyte2024 KB as the
reference, so no ``../shared`` file is needed.
"""

from __future__ import annotations

import math

from experiments.agreement import JUODELYTE_NAMES, rank_agreement

REFERENCE_KB = "juodelyte2024"


def study_agreement(kb, reference_kb: str = REFERENCE_KB) -> dict | None:  # noqa: ANN001
    """Per-target and pooled Spearman agreement of ``kb`` with the reference KB, or None.

    None when ``kb`` is the reference itself, the reference is not installed, or the two
    share no target with at least two shared sources.
    """
    from experiments import list_kbs, load_kb

    if kb.name == reference_kb or reference_kb not in list_kbs():
        return None
    ref = load_kb(reference_kb).matrix()
    table, pooled = rank_agreement(kb.matrix(), ref, JUODELYTE_NAMES)
    if table.empty or pooled.get("n_targets", 0) == 0:
        return None
    per = table.drop(columns=["sources"]).to_dict(orient="records")
    for r in per:
        for k in ("spearman_rho", "p_value"):
            if isinstance(r.get(k), float) and math.isnan(r[k]):
                r[k] = None
    return {"reference": reference_kb, "names": JUODELYTE_NAMES, "per_target": per, "pooled": pooled}


def agreement_sentences(agr: dict | None) -> list[str]:
    """'Agreement with juodelyte2024 …' lines: pooled ρ with p and n, then each shared target."""
    if not agr:
        return []
    from recommender.evaluation.paired import format_p

    p = agr["pooled"]
    rho = p.get("spearman_rho")
    head = (f"Agreement with the published study ({agr['reference']}) on shared targets and sources: "
            + (f"pooled Spearman ρ {rho:+.2f}, {format_p(p.get('p_value', math.nan))}, "
               f"n = {p['n_pairs']} (source, target) pairs in {p['n_targets']} targets (AUC centred per target)"
               if rho is not None else f"too few shared pairs ({p['n_pairs']}) for a pooled ρ"))
    lines = [head]
    for r in agr["per_target"]:
        if r["spearman_rho"] is None:
            lines.append(f"  {r['target']} ~ {r['reference_target']}: {r['n_sources']} shared sources, "
                         "too few for ρ")
        else:
            lines.append(f"  {r['target']} ~ {r['reference_target']}: ρ {r['spearman_rho']:+.2f}, "
                         f"{format_p(r['p_value'])}, n = {r['n_sources']} sources")
    return lines
