"""The meta-dataset: one feature row per (source, target) cell of a KB's transfer matrix.

Columns: ``source, target, auc`` then features prefixed ``src_`` (source card +
meta-features), ``tgt_`` (target card + meta-features), ``pair_`` (study pair features
such as similarities, expert distance, LogME; card comparisons; |src − tgt| meta-feature
differences) and ``fold_`` (features computed from the *training* part of the matrix
only, e.g. each source's static prior). The ``fold_`` and within-target ``_tz`` columns
depend on which targets are held out, so they are (re)computed per fold by
:func:`fold_features` — that is how LOTO keeps the held-out target's AUCs away from
the model. :func:`new_target_rows` builds the same columns for a target that is not in
the KB, which is what ``recommend`` calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from experiments.knowledge_base import KnowledgeBase
from imagesets import UserError
from imagesets.modality import canonical_modality, same_modality


class MetaDatasetError(UserError):
    """A KB that cannot be turned into meta-model rows."""


ID_COLUMNS = ["source", "target", "auc"]
LOWER_IS_BETTER_HINTS = ("dist", "distance", "expert")


def pair_direction(feature: str, kind: str = "") -> int:
    """+1 when a larger value should mean a better source, −1 for distances."""
    name = feature.lower()
    if kind == "expert" or any(h in name for h in LOWER_IS_BETTER_HINTS):
        return -1
    return 1


def twins_map(kb: KnowledgeBase) -> dict[str, set[str]]:
    """Each dataset's group mates, symmetric: whatever must be held out with it.

    The independence groups of ``KnowledgeBase.groups`` (manifest ``groups``: a derived task
    with its parent; declared twins), plus the manifest's ``twins`` in any of its formats
    (list of pairs or longer lists, name→list). Leave-one-group-out holds out all of them.
    """
    raw = kb.manifest.get("twins") or []
    pairs: list[tuple[str, str]] = []
    if isinstance(raw, dict):
        for a, bs in raw.items():
            for b in [bs] if isinstance(bs, str) else bs:
                pairs.append((str(a), str(b)))
    else:
        for item in raw:
            group = list(item.values()) if isinstance(item, dict) else list(item)
            for i, a in enumerate(group):
                for b in group[i + 1:]:
                    pairs.append((str(a), str(b)))
    members: dict[str, list[str]] = {}
    for name, g in kb.groups.items():
        members.setdefault(g, []).append(name)
    for names in members.values():
        pairs += [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    out: dict[str, set[str]] = {}
    for a, b in pairs:
        out.setdefault(a, set()).add(b)
        out.setdefault(b, set()).add(a)
    return out


def held_out_with_twins(targets: list[str] | set[str], twins: dict[str, set[str]]) -> set[str]:
    """The held-out targets plus every near-duplicate of them (dropped from rows AND columns)."""
    held = set(targets)
    for t in list(held):
        held |= twins.get(t, set())
    return held


def card_features(card: dict) -> dict[str, float]:
    """Numeric card features (NaN when unknown): sizes on log scale, medical flag, multi-label flag."""
    def num(key: str) -> float:
        try:
            v = float(card.get(key, math.nan))
        except (TypeError, ValueError):
            return math.nan
        return v if np.isfinite(v) else math.nan

    n_img, n_cls = num("n_images"), num("n_classes")
    tpc = num("train_per_class")
    domain = str(card.get("domain", "") or "").lower()
    task = str(card.get("task", "") or "").lower()
    return {
        "log_n_images": math.log10(n_img) if n_img > 0 else math.nan,
        "log_n_classes": math.log2(n_cls) if n_cls > 0 else math.nan,
        "channels": num("channels"),
        "resolution": num("resolution"),
        "is_medical": (1.0 if domain == "medical" else 0.0) if domain in ("medical", "natural") else math.nan,
        "multilabel": 1.0 if "multi-label" in task or "multilabel" in task else 0.0,
        "log_train_per_class": math.log10(tpc) if tpc > 0 else math.nan,
    }


def train_per_class(card: dict, protocol: dict | None, name: str = "") -> float:
    """Training images per class a fine-tune of the KB's protocol sees on this dataset.

    A build-matrix protocol draws ``n_train`` images (or ``n_per_class`` per class; a derived
    low-data task its own ``n_per_class``) from the training share of the rows; without a
    protocol, the card's images times 0.7 (a seeded 70% split). NaN when the card lacks counts.
    """
    from experiments.derived import DERIVED

    try:
        n_img, n_cls = float(card.get("n_images")), float(card.get("n_classes"))
    except (TypeError, ValueError):
        return math.nan
    if not (np.isfinite(n_img) and np.isfinite(n_cls) and n_cls > 0):
        return math.nan
    task = DERIVED.get(name)
    if task is not None and getattr(task, "n_per_class", 0):
        return float(task.n_per_class)
    ev = (protocol or {}).get("evaluation") or {}
    share = float((ev.get("split") or [0.7])[0])
    pool = n_img * share / n_cls
    if ev.get("n_per_class"):
        return float(min(pool, float(ev["n_per_class"])))
    if ev.get("n_train"):
        return float(min(pool, float(ev["n_train"]) / n_cls))
    return float(pool)


def native_resolution(native_size: dict | None, default: float = math.nan) -> float:
    """The card ``resolution`` of a read folder: median of its native median height and width.

    ``imagesets`` cards store ``h_median``/``w_median``; reading any other key silently gave
    every user target the side it was resized to (28)."""
    ns = native_size or {}
    vals = [float(ns[k]) for k in ("h_median", "w_median") if _finite(ns.get(k))]
    return float(np.median(vals)) if vals else float(default)


def _finite(v: object) -> bool:
    try:
        return v is not None and math.isfinite(float(v)) and float(v) > 0
    except (TypeError, ValueError):
        return False


def _text(card: dict, key: str) -> str:
    v = card.get(key, "")
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip().lower()


def _pair_card_features(src: dict, tgt: dict) -> dict[str, float]:
    def same(key: str) -> float:
        a, b = _text(src, key), _text(tgt, key)
        return math.nan if not a or not b else float(a == b)

    cs, ct = card_features(src), card_features(tgt)
    return {
        "pair_same_domain": same("domain"),
        # one vocabulary: a DICOM 'CR' target matches an 'x-ray' source, 'MR' matches 'mri'
        "pair_same_modality": same_modality(src.get("modality"), tgt.get("modality")),
        "pair_same_channels": float(cs["channels"] == ct["channels"])
        if np.isfinite(cs["channels"]) and np.isfinite(ct["channels"]) else math.nan,
        "pair_log_size_ratio": cs["log_n_images"] - ct["log_n_images"],
    }


def _meta_table(kb: KnowledgeBase) -> pd.DataFrame:
    mf = kb.meta_features
    if mf is None or mf.empty or "dataset" not in mf.columns:
        return pd.DataFrame()
    mf = mf.drop_duplicates("dataset").set_index("dataset")
    return mf.apply(pd.to_numeric, errors="coerce").astype(float)


@dataclass
class MetaDataset:
    """The static part of the meta-dataset plus what fold features and new targets need."""

    kb_name: str
    rows: pd.DataFrame  # one row per measured cell: ID_COLUMNS + static feature columns
    matrix: pd.DataFrame  # sources × targets AUC
    cards: dict[str, dict]
    meta: pd.DataFrame  # dataset × meta-feature (may be empty)
    pair_features: list[str]  # names of pair features from the KB
    pair_directions: dict[str, int]
    pair_kinds: dict[str, str] = field(default_factory=dict)
    twins: dict[str, set[str]] = field(default_factory=dict)  # group mates (see twins_map)
    groups: dict[str, str] = field(default_factory=dict)  # dataset → independence group
    protocol: dict | None = None  # the KB's build-matrix protocol (split, n_train), when it has one

    @property
    def targets(self) -> list[str]:
        return [t for t in self.matrix.columns if self.matrix[t].notna().any()]

    @property
    def sources(self) -> list[str]:
        return list(self.matrix.index)

    def static_feature_columns(self) -> list[str]:
        return [c for c in self.rows.columns if c not in ID_COLUMNS]


def _feature_row(source: str, src_card: dict, tgt_card: dict, src_meta: pd.Series,
                 tgt_meta: pd.Series, pairs: dict[str, float], pair_names: list[str]) -> dict:
    row: dict[str, float | str] = {"source": source}
    for k, v in card_features(src_card).items():
        row[f"src_{k}"] = v
    for k, v in card_features(tgt_card).items():
        row[f"tgt_{k}"] = v
    row.update(_pair_card_features(src_card, tgt_card))
    for f in pair_names:
        row[f"pair_{f}"] = float(pairs.get(f, math.nan))
    for m in src_meta.index:
        a, b = float(src_meta.get(m, math.nan)), float(tgt_meta.get(m, math.nan))
        row[f"src_{m}"] = a
        row[f"tgt_{m}"] = b
        row[f"pair_absdiff_{m}"] = abs(a - b) if np.isfinite(a) and np.isfinite(b) else math.nan
    return row


def build_meta_dataset(kb: KnowledgeBase) -> MetaDataset:
    """Static meta-dataset rows for every measured (source, target) cell of ``kb``."""
    matrix = kb.matrix()
    if matrix.empty or not np.isfinite(matrix.to_numpy(dtype=float)).any():
        raise MetaDatasetError(f"knowledge base '{kb.name}' has no measured {kb.metric} values")
    names = sorted(set(matrix.index) | set(matrix.columns))
    proto = kb.manifest.get("protocol") if isinstance(kb.manifest.get("protocol"), dict) else None
    cards = {n: kb.card(n) for n in names}
    for n, c in cards.items():
        if c and "train_per_class" not in c:
            c["train_per_class"] = train_per_class(c, proto, n)
    meta = _meta_table(kb)
    pf = kb.pair_features
    pair_names: list[str] = []
    directions: dict[str, int] = {}
    kinds: dict[str, str] = {}
    pair_lookup: dict[tuple[str, str], dict[str, float]] = {}
    if pf is not None and len(pf):
        for f, grp in pf.groupby("feature", sort=True):
            kind = str(grp["kind"].iloc[0]) if "kind" in grp else ""
            pair_names.append(str(f))
            directions[str(f)] = pair_direction(str(f), kind)
            kinds[str(f)] = kind
            vals = grp.groupby(["source", "target"])["value"].mean()
            for (s, t), v in vals.items():
                pair_lookup.setdefault((str(s), str(t)), {})[str(f)] = float(v)
    empty = pd.Series(dtype=float, index=meta.columns)
    rows = []
    for t in matrix.columns:
        for s in matrix.index:
            auc = matrix.at[s, t]
            if not np.isfinite(auc):
                continue
            sm = meta.loc[s] if s in meta.index else empty
            tm = meta.loc[t] if t in meta.index else empty
            r = _feature_row(s, cards[s], cards[t], sm, tm, pair_lookup.get((s, t), {}), pair_names)
            r["target"], r["auc"] = t, float(auc)
            rows.append(r)
    df = pd.DataFrame(rows)
    df = df[ID_COLUMNS + [c for c in df.columns if c not in ID_COLUMNS]]
    return MetaDataset(kb.name, df.reset_index(drop=True), matrix, cards, meta, pair_names,
                       directions, kinds, twins_map(kb), dict(kb.groups), proto)


# -- fold-dependent features ---------------------------------------------------------
def column_z(matrix: pd.DataFrame) -> pd.DataFrame:
    """Each target column standardised over its measured sources (population sd; NaN kept)."""
    sd = matrix.std(axis=0, ddof=0).replace(0.0, np.nan)
    return (matrix - matrix.mean(axis=0)) / sd


def _loo_mean(z: pd.DataFrame, rows: pd.DataFrame, cols: list[str]) -> np.ndarray:
    """Mean of z[source, cols] per row, leaving the row's own target column out."""
    cidx = {c: j for j, c in enumerate(z.columns)}
    keep = [cidx[c] for c in cols if c in cidx]
    zc = z.to_numpy(dtype=float)[:, keep]
    kept_cols = {z.columns[j]: i for i, j in enumerate(keep)}
    ridx = {s: i for i, s in enumerate(z.index)}
    total = np.nansum(zc, axis=1)
    count = np.isfinite(zc).sum(axis=1)
    out = np.full(len(rows), np.nan)
    for i, (s, t) in enumerate(zip(rows["source"], rows["target"], strict=True)):
        r = ridx.get(s)
        if r is None:
            continue
        tot, cnt = total[r], count[r]
        j = kept_cols.get(t)
        if j is not None and np.isfinite(zc[r, j]):
            tot, cnt = tot - zc[r, j], cnt - 1
        out[i] = tot / cnt if cnt > 0 else np.nan
    return out


def _profile_prior(md: MetaDataset, rows: pd.DataFrame, z: pd.DataFrame, train_cols: list[str],
                   min_common: int = 4) -> np.ndarray:
    """Static prior re-weighted by target likeness: weight(v, u) = max(0, Spearman ρ) between the
    within-target ranks of v's and u's pair features over their common sources.

    Pair features are inputs available for a new target (similarities, LogME), never AUCs,
    so this uses nothing of a held-out target's labels; ``z`` holds training columns only.
    """
    feats = [f"pair_{f}" for f in md.pair_features if f"pair_{f}" in rows.columns]
    out = np.full(len(rows), np.nan)
    if not feats or not train_cols:
        return out
    src = rows.drop_duplicates(["source", "target"])
    prof = pd.concat({f: src.pivot(index="source", columns="target", values=f).rank() for f in feats})
    targets = list(dict.fromkeys(rows["target"]))
    weights: dict[str, dict[str, float]] = {}
    pv = prof.to_numpy(dtype=float)  # numpy columns: this runs once per fold, hundreds of times
    pcol = {c: j for j, c in enumerate(prof.columns)}
    for v in targets:
        weights[v] = {}
        for u in train_cols:
            if u == v or u not in pcol or v not in pcol:
                continue
            a, b = pv[:, pcol[v]], pv[:, pcol[u]]
            ok = np.isfinite(a) & np.isfinite(b)
            if ok.sum() >= min_common:
                rho = np.corrcoef(a[ok], b[ok])[0, 1]
                if np.isfinite(rho) and rho > 0:
                    weights[v][u] = float(rho)
    zi = {s: i for i, s in enumerate(z.index)}
    zv = z.to_numpy(dtype=float)
    zc = {c: j for j, c in enumerate(z.columns)}
    for i, (s, t) in enumerate(zip(rows["source"], rows["target"], strict=True)):
        r = zi.get(s)
        if r is None or not weights.get(t):
            continue
        num = den = 0.0
        for u, w in weights[t].items():
            val = zv[r, zc[u]]
            if np.isfinite(val):
                num, den = num + w * val, den + w
        out[i] = num / den if den > 0 else np.nan
    return out


def add_within_target_z(rows: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """``<col>_tz``: each column standardised within its target over the candidate rows.

    Scales differ wildly between targets (LogME ≈ 5 on breastmnist, ≈ −0.2 on retinamnist),
    so a ranking model needs the within-target position more than the raw value.
    """
    out = rows.copy()
    g = out.groupby("target", sort=False)
    for c in cols:
        mu = g[c].transform("mean")
        sd = g[c].transform("std", ddof=0).replace(0.0, np.nan)
        out[f"{c}_tz"] = (out[c] - mu) / sd
    return out


def fold_features(md: MetaDataset, rows: pd.DataFrame, train_targets: list[str],
                  held_out: set[str], extra_cards: dict[str, dict] | None = None) -> pd.DataFrame:
    """Add ``fold_`` features computed only from training cells (targets ∉ held_out, sources ∉ held_out).

    ``fold_static_prior``: the source's mean column-z over training targets, leaving the row's
    own target out (no self-leak for training rows). ``fold_modality_prior``: the same over
    training targets that share a modality with the row target (one vocabulary:
    :mod:`imagesets.modality`). ``fold_profile_prior``: a
    weighted mean over training targets, weighted by how alike their pair-feature profiles
    (e.g. LogME of every source) are to the row target's. NaN when no column is left.
    """
    train_cols = [t for t in train_targets if t not in held_out]
    m = md.matrix.drop(index=[s for s in held_out if s in md.matrix.index], errors="ignore")
    m = m.reindex(columns=train_cols)
    z = column_z(m)
    out = rows.copy()
    out["fold_static_prior"] = _loo_mean(z, out, train_cols)
    cards = md.cards | (extra_cards or {})
    modality = {t: canonical_modality(cards.get(t, {}).get("modality"))
                for t in set(out["target"]) | set(train_cols)}
    mod_prior = np.full(len(out), np.nan)
    for mod in {modality[t] for t in out["target"]}:
        if not mod:
            continue
        cols = [c for c in train_cols if same_modality(modality[c], mod) == 1.0]
        sel = (out["target"].map(modality) == mod).to_numpy()
        if cols and sel.any():
            mod_prior[sel] = _loo_mean(z, out[sel], cols)
    out["fold_modality_prior"] = mod_prior
    out["fold_profile_prior"] = _profile_prior(md, out, z, train_cols)
    pair_cols = [f"pair_{f}" for f in md.pair_features if f"pair_{f}" in out.columns]
    return add_within_target_z(out, ["fold_static_prior", *pair_cols])


def normalised_label(rows: pd.DataFrame) -> pd.Series:
    """AUC standardised within each target over that fold's rows (computed from training rows only)."""
    g = rows.groupby("target", sort=False)["auc"]
    sd = g.transform("std", ddof=0).replace(0.0, np.nan)
    return ((rows["auc"] - g.transform("mean")) / sd).fillna(0.0)


def fold_rows(md: MetaDataset, test_targets: list[str],
              exclude: set[str] | frozenset[str] = frozenset()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) rows for holding out ``test_targets`` (plus ``exclude``, plus all their twins).

    Training rows have target ∉ held-out and source ∉ held-out, so a held-out dataset's
    column and row never reach the model. Test rows are the ``test_targets``' measured
    cells over sources that are not held out. ``exclude`` is how an inner LOTO loop keeps
    the outer held-out target out as well.
    """
    held = held_out_with_twins([*test_targets, *exclude], md.twins)
    train_t = [t for t in md.targets if t not in held]
    r = md.rows
    tr = r[r["target"].isin(train_t) & ~r["source"].isin(held)]
    te = r[r["target"].isin(test_targets) & ~r["source"].isin(held)]
    both = fold_features(md, pd.concat([tr, te]), train_t, held)
    n = len(tr)
    train = both.iloc[:n].reset_index(drop=True)
    train["label_z"] = normalised_label(train)
    return train, both.iloc[n:].reset_index(drop=True)


def all_rows(md: MetaDataset) -> pd.DataFrame:
    """Training rows for the final model: every cell, fold features leave each row's target out."""
    rows = fold_features(md, md.rows, md.targets, set())
    rows["label_z"] = normalised_label(rows)
    return rows


def new_target_rows(md: MetaDataset, target_card: dict, target_meta: pd.Series | None,
                    pair_features: pd.DataFrame | None, sources: list[str] | None = None,
                    target_name: str = "new_target") -> pd.DataFrame:
    """Feature rows for a target NOT in the KB, one per KB source, same columns as training.

    ``pair_features``: long ``[source, feature, value]`` (e.g. similarities or LogME for the
    new target); anything missing stays NaN. Fold features use every KB target as training.
    """
    tm = (target_meta if target_meta is not None else pd.Series(dtype=float)).reindex(md.meta.columns)
    if "train_per_class" not in target_card:
        target_card = dict(target_card) | {"train_per_class": train_per_class(target_card, md.protocol)}
    lookup: dict[str, dict[str, float]] = {}
    if pair_features is not None and len(pair_features):
        for rec in pair_features.itertuples(index=False):
            lookup.setdefault(str(rec.source), {})[str(rec.feature)] = float(rec.value)
    empty = pd.Series(dtype=float, index=md.meta.columns)
    rows = []
    for s in sources or md.sources:
        sm = md.meta.loc[s] if s in md.meta.index else empty
        r = _feature_row(s, md.cards.get(s, {}), target_card, sm, tm.astype(float),
                         lookup.get(s, {}), md.pair_features)
        r["target"], r["auc"] = target_name, math.nan
        rows.append(r)
    df = pd.DataFrame(rows)
    df = df[ID_COLUMNS + [c for c in df.columns if c not in ID_COLUMNS]]
    return fold_features(md, df, md.targets, set(), extra_cards={target_name: target_card})


_MD_CACHE: dict[tuple[str, str], MetaDataset] = {}


def rows_for_new_target(kb: KnowledgeBase, target_card: dict, target_meta: pd.Series | None,
                        pair_features: pd.DataFrame | None, sources: list[str] | None = None
                        ) -> pd.DataFrame:
    """:func:`new_target_rows` from a loaded KB (its meta-dataset is built once per KB path)."""
    key = (kb.name, str(kb.path))
    if key not in _MD_CACHE:
        _MD_CACHE[key] = build_meta_dataset(kb)
    name = str(target_card.get("name") or "new_target")
    return new_target_rows(_MD_CACHE[key], target_card, target_meta, pair_features, sources, name)
