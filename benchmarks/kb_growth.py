"""What a larger KB is for: the same nested leave-one-group-out on KB `local` v2 and v3, side by side.

Run by hand: ``.venv/bin/python benchmarks/kb_growth.py [--v2-commit 4772c27] [--out DIR]``.
v2 (12 sources + scratch × 16 targets in 11 groups) is read from the git history of
``artifacts/kb/local`` at ``--v2-commit`` (the last commit before v3 was exported) into a
temporary folder; v3 is the KB in the working tree. Both run the current code (the same
candidates, the same learned model), so the difference is the KB alone. Printed per KB: τw and
regret with 95% bootstrap CIs over targets for the shipped procedures (any folder / with
estimates), static, the inner-best single estimator, the best single estimator picked on the
outer figures (favours it), and the learned LightGBM model alone; then each one's paired
difference to static over groups (mean, bootstrap 95% CI, Wilcoxon p, n). ≈ 9 min on 2 cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from experiments import load_kb  # noqa: E402
from recommender.evaluation import run_loto  # noqa: E402
from recommender.evaluation.paired import paired_comparison  # noqa: E402
from recommender.model import build_meta_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FILES = ("records.csv", "datasets.csv", "manifest.json", "meta_features.csv", "pair_features.csv")
ROWS = ("shipped", "shipped+est", "static", "estimate:best", "learned+est")


def kb_at_commit(commit: str, dest: Path) -> Path:
    """``artifacts/kb/local`` as it was at ``commit`` (tables only: no checkpoints needed)."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        text = subprocess.run(["git", "show", f"{commit}:artifacts/kb/local/{f}"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout
        (dest / f).write_text(text)
    return dest


def figures(kb_path: str | Path, label: str) -> list[dict]:
    kb = load_kb(str(kb_path))
    res = run_loto(build_meta_dataset(kb))
    s = res.summary.set_index("method")
    est = [m for m in s.index if m.startswith("estimate:") and m != "estimate:best"]
    post_hoc = max(est, key=lambda m: s.loc[m, "tau_w"]) if est else None
    wide = {m: res.per_target.pivot_table(index="target", columns="method", values=m, aggfunc="first")
            for m in ("tau_w", "regret")}
    out = []
    for m in [*ROWS, post_hoc]:
        if m is None or m not in s.index:
            continue
        row = {"kb": label, "n_targets": int(s.loc[m, "n_targets"]), "n_groups": res.n_groups,
               "method": m + (" (post hoc)" if m == post_hoc else "")}
        for metric, hib in (("tau_w", True), ("regret", False)):
            row[metric] = float(s.loc[m, metric])
            row[f"{metric}_lo"], row[f"{metric}_hi"] = float(s.loc[m, f"{metric}_lo"]), float(s.loc[m, f"{metric}_hi"])
            if m != "static":
                c = paired_comparison(wide[metric][m], wide[metric]["static"], groups=res.groups,
                                      higher_is_better=hib)
                row |= {f"{metric}_vs_static": c["mean_diff"], f"{metric}_vs_static_lo": c["lo"],
                        f"{metric}_vs_static_hi": c["hi"], f"{metric}_vs_static_p": c["p"],
                        f"{metric}_vs_static_words": c["words"]}
        out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--v2-commit", default="4772c27")
    ap.add_argument("--out", type=Path, default=None, help="also write the table as CSV here")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = figures(kb_at_commit(a.v2_commit, Path(tmp) / "local_v2"), "v2") + figures("local", "v3")
    df = pd.DataFrame(rows)
    for r in df.itertuples(index=False):
        d = r._asdict()
        vs = ""
        if isinstance(d.get("tau_w_vs_static"), float) and pd.notna(d.get("tau_w_vs_static")):
            vs = (f"  vs static Δτw {d['tau_w_vs_static']:+.3f} [{d['tau_w_vs_static_lo']:+.3f}, "
                  f"{d['tau_w_vs_static_hi']:+.3f}] p {d['tau_w_vs_static_p']:.3f} ({d['tau_w_vs_static_words']})")
        print(f"{d['kb']} ({d['n_targets']} targets, {d['n_groups']} groups) {d['method']:<28} "
              f"τw {d['tau_w']:.3f} [{d['tau_w_lo']:.3f}, {d['tau_w_hi']:.3f}]  regret {d['regret']:.4f} "
              f"[{d['regret_lo']:.4f}, {d['regret_hi']:.4f}]{vs}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(a.out, index=False)


if __name__ == "__main__":
    main()
