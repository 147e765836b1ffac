"""Words for numbers: where a source's weights come from, and what a feature means.

`recommend` shows the three features that moved each source's prediction most.
A LightGBM column name like ``pair_dist_frechet`` means nothing to a radiologist,
so this module turns names into short phrases and contributions into sentences.
"""

from __future__ import annotations

import re

import numpy as np

# Public names for sources whose weights are not shipped in artifacts.
PUBLIC_WEIGHTS: dict[str, str] = {
    # the weights experiments.models loads for pretrained=True (get_model_weights(arch).IMAGENET1K_V1)
    "imagenet": "ImageNet: torchvision ResNet50_Weights.IMAGENET1K_V1 / ResNet18_Weights.IMAGENET1K_V1",
    "radimagenet": "RadImageNet ResNet-50 (github.com/BMEII-AI/RadImageNet)",
    "medmnist": "pretrain on all MedMNIST 2D sets but your target (pip install medmnist)",
    "stl10": "STL-10 (torchvision.datasets.STL10), pretrain yourself",
    "sti10": "STI-10 (seed study's subset of ImageNet), pretrain yourself",
    "textures": "DTD textures (torchvision.datasets.DTD), pretrain yourself",
    "isic": "ISIC 2018 task 3 (challenge.isic-archive.com), pretrain yourself",
    "chest": "Kermany chest X-rays (Mendeley rscbjbr9sj), pretrain yourself",
    "pcam-middle": "PCam (github.com/basveeling/pcam), 100k-patch subset",
    "pcam-small": "PCam (github.com/basveeling/pcam), 10k-patch subset",
    "kimia": "KimiaPath960 (kimia.uwaterloo.ca), pretrain yourself",
    "scratch": "random initialisation (no pretraining)",
}

_MEDMNIST = re.compile(r"^[a-z]+mnist$")

# Substring -> phrase; first match wins, so the specific ones come first.
_PHRASES: list[tuple[str, str]] = [
    ("static_prior_tz", "source's average standing, relative to the other candidates"),
    ("static_prior", "source's mean standardised AUC over the KB's targets"),
    ("modality_minus_prior", "source's standing on same-modality KB targets, above its overall one"),
    ("profile_minus_prior", "source's standing on look-alike KB targets, above its overall one"),
    ("modality_prior", "source's standing on KB targets of the same modality"),
    ("profile_prior", "source's standing on KB targets that look like this one"),
    ("prior", "source's average standing on the KB's targets"),
    ("same_modality", "same imaging modality"),
    ("same_domain", "same natural/medical domain"),
    ("same_channels", "same number of colour channels"),
    ("size_ratio", "source/target size ratio"),
    ("frechet", "Fréchet distance of probe embeddings"),
    ("mmd", "MMD between probe embeddings"),
    ("otdd", "label-aware OT dataset distance"),
    ("cosine", "cosine similarity of meta-features"),
    ("euclid", "distance between meta-features"),
    ("domain", "domain/modality distance from cards"),
    ("expert", "expert distance"),
    ("task2vec", "Task2Vec distance"),
    ("n_images", "number of images"),
    ("n_classes", "number of classes"),
    ("imbalance", "class imbalance"),
    ("channels", "colour channels"),
    ("resolution", "image resolution"),
    ("modality", "imaging modality"),
    ("domain", "natural vs medical domain"),
    ("entropy", "intensity-histogram entropy"),
    ("contrast", "contrast"),
    ("colour", "colourfulness"),
    ("edge", "edge density"),
    ("glcm", "GLCM texture"),
    ("lbp", "LBP texture"),
    ("spectrum", "power-spectrum slope"),
    ("separab", "class separability"),
    ("fisher", "class separability (Fisher ratio)"),
    ("nn1", "class separability (1-NN accuracy)"),
    ("silhouette", "class separability (silhouette)"),
    ("dist_ot", "OT distance of probe embeddings"),
]


# Pair features matched by whole name only: "nce" is inside "variance", "lp" and "fu" inside
# many words. The study estimators (fu ... sfda) come from Juodelyte et al. 2024's own files.
_EXACT: dict[str, str] = {
    "logme": "LogME transferability", "nleep": "N-LEEP transferability", "leep": "LEEP transferability",
    "nce": "NCE transferability", "hscore": "H-score transferability",
    "knn_acc": "k-NN accuracy on source features", "knn_accuracy": "k-NN accuracy on source features",
    "fu": "feature-reuse score (study)", "lp": "linear-probe accuracy (study)",
    "parc": "PARC transferability", "ncti": "NCTI transferability", "sfda": "SFDA transferability",
    "dist_task2vec_cos": "Task2Vec distance (plain cosine, the seed study's)",
    "dist_task2vec_ncos": "Task2Vec distance (normalised cosine)",
    "dist_task2vec_asym": "Task2Vec source→target distance (asymmetric)",
}


def weights_location(source: str, checkpoint: str | None) -> str:
    """Where to get this source's weights: the shipped file, or a public name."""
    if checkpoint:
        return checkpoint
    if source in PUBLIC_WEIGHTS:
        return PUBLIC_WEIGHTS[source]
    if _MEDMNIST.match(source):
        return f"pretrain on MedMNIST '{source}' (pip install medmnist)"
    return f"pretrain on '{source}' (catscans build-matrix)"


_SIDES = (("src_", "source "), ("tgt_", "target "), ("pair_absdiff_", "source–target gap in "),
          ("pair_diff_", "source–target gap in "), ("absdiff_", "source–target gap in "),
          ("diff_", "source–target gap in "))


def describe_feature(name: str) -> str:
    """A short phrase for a meta-model feature column name.

    The meta-dataset names |src − tgt| meta-feature differences ``pair_absdiff_<group.name>``
    (see ``model.meta_dataset``), so that prefix is matched whole before the phrase lookup;
    a within-target standardised copy (``_tz``) reads as its base feature.
    """
    side = ""
    if name.startswith("tgt_scratch_"):  # scratch's estimate on the folder: how hard it is
        return "scratch's " + describe_feature("pair_" + name[len("tgt_scratch_"):]) + " on your folder"
    if name == "fold_gain_prior":
        return "source's mean gain over scratch on the KB's targets"
    name = name.removeprefix("fold_")
    for prefix, words in _SIDES:
        if name.startswith(prefix):
            side, name = words, name[len(prefix):]
            break
    low = name.lower()
    if low.endswith("_vs_scratch"):  # the learned model's "source's estimate minus scratch's"
        return side + describe_feature(name[: -len("_vs_scratch")]) + " minus scratch's"
    if low == "is_scratch":
        return "training from scratch (no pretrained source)"
    base = low.removeprefix("pair_").removesuffix("_tz")
    if base in _EXACT:
        return side + _EXACT[base] + (" (relative to the other candidates)" if low.endswith("_tz") else "")
    for key, phrase in _PHRASES:
        if key in low:
            return side + phrase
    base = re.sub(r"^pair_", "", name)
    return side + base.replace("_", " ").replace(".", " ")


def reasons(contrib_row: dict[str, float], k: int = 3) -> str:
    """The k features that moved a prediction most, as '↑ phrase; ↓ phrase'."""
    items = [(n, v) for n, v in contrib_row.items() if np.isfinite(v) and n != "bias"]
    items.sort(key=lambda kv: -abs(kv[1]))
    parts = []
    for n, v in items[:k]:
        if abs(v) < 1e-12:
            continue
        parts.append(f"{'↑' if v > 0 else '↓'} {describe_feature(n)}")
    return "; ".join(parts) if parts else "no single feature dominates"


# -- the "why" of the method that set the order, and one word of evidence ----------------
# Substring of a feature/column name -> one word for the compact table (first match wins).
_EVIDENCE: list[tuple[str, str]] = [
    ("is_scratch", "scratch"), ("prior", "KB-record"), ("nleep", "N-LEEP"), ("leep", "LEEP"), ("logme", "LogME"),
    ("nce", "NCE"), ("hscore", "H-score"), ("knn", "k-NN"), ("frechet", "similarity"),
    ("mmd", "similarity"), ("otdd", "similarity"), ("cosine", "similarity"), ("euclid", "similarity"), ("dist_ot", "similarity"),
    ("task2vec", "similarity"), ("domain", "domain"), ("modality", "domain"), ("expert", "domain"),
    ("n_images", "size"), ("size", "size"), ("n_classes", "task"),
]


def evidence_word(feature: str) -> str:
    """One word for the kind of evidence a feature is (KB-record, LogME, similarity, ...)."""
    low = feature.lower()
    return next((word for key, word in _EVIDENCE if key in low), "meta-features")


def _finite(v: object) -> bool:
    try:
        return bool(np.isfinite(float(v)))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def explain_order(method: str, baseline: tuple[str, int] | None, feature_row: dict,
                  contrib_row: dict[str, float], k: int = 3) -> tuple[str, str]:
    """(evidence word, why text) from the method that set the order, never another one's view.

    The meta-model's reasons are its largest contributions among features that have a value
    for this source (a transferability estimate that was not computed is never cited); a
    baseline's reason is the one column it ranks by, with this source's value.
    """
    if method in ("meta", "model"):  # "model": any order whose own per-feature terms are given
        have = {n: v for n, v in contrib_row.items()
                if n == "bias" or n not in feature_row or _finite(feature_row.get(n))}
        top = [n for n, v in sorted(have.items(), key=lambda kv: -abs(kv[1]))
               if n != "bias" and _finite(v) and abs(v) >= 1e-12]
        return (evidence_word(top[0]) if top else "meta-features"), reasons(have, k)
    if baseline is None:
        return "—", f"ordered by {method}"
    col, sign = baseline
    v = feature_row.get(col)
    phrase = describe_feature(col)
    if not _finite(v):
        return evidence_word(col), f"no {phrase} for this source (ranked last by {method})"
    if col == "fold_static_prior":
        return "KB-record", (f"its AUC, standardised per KB target and averaged over the KB's targets, "
                             f"is {float(v):+.2f} sd (static ranking: higher first)")
    if col == "src_log_n_images":
        return "size", f"{10 ** float(v):,.0f} images in the source (largest source first)"
    order = "higher first" if sign > 0 else "lower first"
    return evidence_word(col), f"{phrase} = {float(v):.4g} ({method}: {order})"



# -- a rank average's own reasons: where each of its parts ranks the source ---------------------
def rank_average_parts(method: str, estimators: list[str] | tuple[str, ...] = ()) -> list[str] | None:
    """The parts of a ``rankavg:static+a+b`` method (None for any other method); ``all`` stands
    for every one of ``estimators`` (the KB's, as ``rankavg:static+all`` averages them)."""
    if not method.startswith("rankavg:"):
        return None
    parts = []
    for p in method.split(":", 1)[1].split("+"):
        parts.extend(list(estimators) if p == "all" else [p])
    return parts


def explain_rank_average(parts: list[str], rows, directions: dict[str, int]) -> dict[str, tuple[str, str]]:  # noqa: ANN001
    """source -> (evidence word, 'static #2, hscore #1, knn_acc #3 → mean rank 2.0').

    Ranks are 1 = best among the candidates of this target, for the static prior and each
    estimate (oriented by its direction), as the rank average combines them; a part with no
    value for a source is left out of its mean (as the method does). The evidence word is the
    part that ranks the source highest.
    """
    import pandas as pd

    cols = {p: ("fold_static_prior" if p == "static" else f"pair_{p}") for p in parts}
    vals = pd.DataFrame({p: (rows[c].astype(float) * (1 if p == "static" else directions.get(p, 1))
                             if c in rows else np.nan) for p, c in cols.items()})
    ranks = vals.rank(ascending=False, method="min")
    out = {}
    for i, src in enumerate(rows["source"]):
        got = [(p, ranks.iloc[i][p]) for p in parts if np.isfinite(ranks.iloc[i][p])]
        if not got:
            out[str(src)] = ("—", f"no value for any of {', '.join(parts)} (ranked last)")
            continue
        text = ", ".join(f"{p} #{int(r)}" for p, r in got)
        missing = [p for p in parts if p not in dict(got)]
        text += (f" (no {', '.join(missing)})" if missing else "")
        best = min(got, key=lambda pr: pr[1])[0]
        out[str(src)] = (evidence_word(cols[best]),
                         f"{text} → mean rank {np.mean([r for _, r in got]):.1f} of {len(rows)}")
    return out
