"""The knowledge-base (KB) format: measured transfer results plus what describes each dataset.

A KB is a folder ``artifacts/kb/<name>/`` of plain files, so that a published
matrix, a matrix we measured with ``build-matrix`` and a user's own runs all
look the same to the meta-model:

``manifest.json``
    name, description, metric, architecture, protocol, provenance, counts, format_version.
``records.csv``
    long format, one row per measured value:
    ``source, target, metric, value, fold, seed, architecture, protocol, study, file, commit``.
    ``fold``/``seed`` are -1 when the value is already an aggregate.
``datasets.csv``
    one card per dataset: ``name, role, domain, modality, n_images, n_classes, channels,
    resolution, task, licence, image_set, provenance, group, organ, native_size, caveats`` (role: source/target/both; domain:
    natural/medical; image_set: the shared ``.npz`` stem it was measured on, a derived-task
    name from ``experiments.derived`` (cut from a shared set), or empty; group: its
    independence group for leave-one-group-out; native_size: the images the set was made from;
    caveats: what its provenance warns of, e.g. shared series or acquisition shortcuts).
``meta_features.csv`` (optional)
    ``dataset`` + one column per meta-feature; NaN where not computable (never invented).
``pair_features.csv`` (optional)
    long format ``source, target, feature, value, kind, provenance`` for pair-level facts
    that come with the study or are computed from checkpoints (kind: similarity, expert,
    transferability).
``checkpoints/<source>.safetensors`` (optional)
    source-pretrained weights, with ``checkpoints/<source>.json`` describing the architecture.

It lives in ``experiments`` because experiments writes KBs (``--export-kb``) and the
recommender reads them; import direction forbids the reverse.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from imagesets import UserError, artifacts_dir, atomic_path, atomic_write_text, file_lock

FORMAT_VERSION = 1
SCRATCH = "scratch"  # the from-scratch baseline's source name (random init, no pretraining)
RECORD_COLUMNS = [
    "source", "target", "metric", "value", "fold", "seed",
    "architecture", "protocol", "study", "file", "commit",
]
DATASET_COLUMNS = [
    "name", "role", "domain", "modality", "n_images", "n_classes", "channels",
    "resolution", "task", "licence", "image_set", "provenance", "group",
    "organ", "native_size", "caveats",
]
PAIR_COLUMNS = ["source", "target", "feature", "value", "kind", "provenance"]


class KnowledgeBaseError(UserError):
    """A KB that cannot be found or read."""


def kb_root() -> Path:
    return artifacts_dir() / "kb"


@dataclass
class KnowledgeBase:
    """A loaded KB. Tables are pandas DataFrames in the column layouts above."""

    name: str
    records: pd.DataFrame
    datasets: pd.DataFrame
    manifest: dict = field(default_factory=dict)
    meta_features: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["dataset"]))
    pair_features: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PAIR_COLUMNS))
    path: Path | None = None

    # -- views -------------------------------------------------------------
    @property
    def metric(self) -> str:
        return str(self.manifest.get("metric", "roc_auc"))

    def matrix(self, agg: str = "mean", metric: str | None = None) -> pd.DataFrame:
        """Sources x targets of the KB's metric (or ``metric``), aggregated over folds/seeds (NaN = not measured)."""
        r = self.records[self.records["metric"] == (metric or self.metric)]
        m = r.pivot_table(index="source", columns="target", values="value", aggfunc=agg)
        return m.reindex(index=self.sources, columns=self.targets)

    def spread(self, metric: str | None = None) -> pd.DataFrame:
        """Sources x targets standard deviation over folds/seeds (NaN where one value).

        ``metric`` picks another record metric, e.g. a KB's ``manifest['run_metric']``
        (per-run values behind an aggregate cell).
        """
        return self.matrix(agg="std", metric=metric)

    def counts(self, metric: str | None = None) -> pd.DataFrame:
        """Sources x targets number of records behind each cell (0 = not measured)."""
        return self.matrix(agg="count", metric=metric).fillna(0).astype(int)

    @property
    def sources(self) -> list[str]:
        order = self.manifest.get("sources")
        return list(order) if order else sorted(self.records["source"].unique())

    @property
    def targets(self) -> list[str]:
        order = self.manifest.get("targets")
        return list(order) if order else sorted(self.records["target"].unique())

    def card(self, name: str) -> dict:
        row = self.datasets[self.datasets["name"] == name]
        return {} if row.empty else row.iloc[0].to_dict()

    def pair_feature_matrix(self, feature: str) -> pd.DataFrame:
        pf = self.pair_features[self.pair_features["feature"] == feature]
        return pf.pivot_table(index="source", columns="target", values="value", aggfunc="mean")

    def checkpoint_path(self, source: str) -> Path | None:
        if self.path is None:
            return None
        p = self.path / "checkpoints" / f"{source}.safetensors"
        return p if p.exists() else None

    @property
    def groups(self) -> dict[str, str]:
        """Each source/target's independence group (leave-one-group-out folds).

        From the manifest's ``groups`` (written by build-matrix: derived tasks join their
        parent, twins join each other), else from its declared ``twins`` (union-find), else
        every dataset is its own group. Every evaluation of a KB holds out whole groups.
        """
        names = list(dict.fromkeys([*self.sources, *self.targets]))
        declared = self.manifest.get("groups") or {}
        links = [(other, ts[0]) for ts in twin_sets(self.manifest.get("twins")) for other in ts[1:]]
        root = union_find(names, links + [(n, str(g)) for n, g in declared.items()])
        members: dict[str, list[str]] = {}
        for n in names:
            members.setdefault(root[n], []).append(n)
        label = {r: str(declared.get(sorted(m)[0], sorted(m)[0])) for r, m in members.items()}
        return {n: label[root[n]] for n in names}

    @property
    def has_checkpoints(self) -> bool:
        return self.path is not None and any((self.path / "checkpoints").glob("*.safetensors"))


def union_find(names: list[str] | tuple[str, ...], links: list[tuple[str, str]]) -> dict[str, str]:
    """Each of ``names`` mapped to a representative of its connected component under ``links``
    (pairs of names that share images: twins, a derived task and its parent)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in links:
        parent[find(a)] = find(b)
    return {n: find(n) for n in names}


def twin_sets(raw: object) -> list[list[str]]:
    """A manifest's ``twins`` as lists of names: pairs or longer lists (organamnist/organcmnist/
    organsmnist), ``{name: [..]}`` dicts, or lists of dicts; anything else is no twins."""
    if isinstance(raw, dict):
        return [[str(a), *([str(bs)] if isinstance(bs, str) else [str(b) for b in bs])]
                for a, bs in raw.items()]
    out = []
    for item in raw or []:
        names = list(item.values()) if isinstance(item, dict) else list(item)
        if len(names) >= 2:
            out.append([str(n) for n in names])
    return out


def _read_csv(path: Path, **kw) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kw)
    except FileNotFoundError as exc:
        raise KnowledgeBaseError(f"KB file missing: {path}") from exc
    except Exception as exc:  # malformed table -> one-line error
        raise KnowledgeBaseError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else exc}") from exc


def read_manifest(path: Path) -> dict:
    """A KB folder's ``manifest.json`` as a dict, or a one-line KnowledgeBaseError."""
    mp = path / "manifest.json"
    try:
        manifest = json.loads(mp.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KnowledgeBaseError(f"cannot read {mp}: {exc.strerror or exc}") from exc
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise KnowledgeBaseError(f"{mp} is not valid JSON ({str(exc).splitlines()[0]}); "
                                 "restore the file or rebuild the KB") from exc
    if not isinstance(manifest, dict):
        raise KnowledgeBaseError(f"{mp} must hold a JSON object, not {type(manifest).__name__}")
    for key in ("sources", "targets"):
        v = manifest.get(key)
        if v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise KnowledgeBaseError(f"{mp}: '{key}' must be a list of names")
    return manifest


def _is_auc(metric: str) -> bool:
    return metric == "auc" or metric.startswith("roc_auc")


def validate_records(records: pd.DataFrame, manifest: dict, where: Path) -> pd.DataFrame:
    """Checks that catch a truncated, edited or mis-scaled records.csv at load time:
    the columns, the row count the manifest recorded (``n_records``), numeric values, and
    AUC metrics inside [0, 1] (an AUC of 94.8 is a percentage, not an AUC)."""
    missing = [c for c in ("source", "target", "metric", "value") if c not in records.columns]
    if missing:
        raise KnowledgeBaseError(f"{where}: no column {', '.join(missing)} (a KB records.csv has "
                                 f"{', '.join(RECORD_COLUMNS)})")
    n_expected = manifest.get("n_records")
    if isinstance(n_expected, int) and n_expected != len(records):
        raise KnowledgeBaseError(f"{where} has {len(records)} rows but the manifest records {n_expected} "
                                 "(truncated or edited); restore it or rebuild the KB")
    values = pd.to_numeric(records["value"], errors="coerce")
    bad = values.isna() & records["value"].notna()
    if bad.any():
        raise KnowledgeBaseError(f"{where}: {int(bad.sum())} non-numeric value(s), e.g. "
                                 f"'{records.loc[bad, 'value'].iloc[0]}'")
    records = records.assign(value=values.astype(float))
    auc = records["metric"].astype(str).map(_is_auc) & records["value"].notna()
    out = auc & ~records["value"].between(0.0, 1.0)
    if out.any():
        r = records[out].iloc[0]
        raise KnowledgeBaseError(
            f"{where}: {int(out.sum())} {r['metric']} value(s) outside [0, 1], e.g. {r['value']:g} "
            f"({r['source']} -> {r['target']}); AUCs are fractions, not percentages")
    return records


def resolve_kb_path(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if p.is_dir() and (p / "manifest.json").exists():
        return p
    cand = kb_root() / str(name_or_path)
    if (cand / "manifest.json").exists():
        return cand
    known = ", ".join(list_kbs()) or "none"
    raise KnowledgeBaseError(f"no knowledge base '{name_or_path}' (known: {known})")


@contextlib.contextmanager
def _read_lock(path: Path, timeout: float = 30.0) -> Iterator[None]:
    """The KB's writer lock while its files are read, so a load never mixes the files of two
    saves (records of one, manifest of the next). Best effort: a read-only folder (no lock
    file can be made) or a writer stuck past ``timeout`` is read without it."""
    from filelock import Timeout

    try:
        lock = file_lock(path / ".kb")  # the writers' instance (one per path): a holder re-enters
        lock.acquire(timeout=timeout)
    except (OSError, Timeout):
        yield
        return
    try:
        yield
    finally:
        lock.release()


def load_kb(name_or_path: str | os.PathLike) -> KnowledgeBase:
    """Load a KB by name (under ``artifacts/kb``) or by folder path."""
    path = resolve_kb_path(name_or_path)
    with _read_lock(path):
        return _load_files(path)


def _load_files(path: Path) -> KnowledgeBase:
    manifest = read_manifest(path)  # validated on load: one clear line for any corrupt file
    records = validate_records(_read_csv(path / "records.csv", keep_default_na=True), manifest,
                               path / "records.csv")
    datasets = _read_csv(path / "datasets.csv", keep_default_na=False, na_values=[""])
    mf_path = path / "meta_features.csv"
    meta = _read_csv(mf_path) if mf_path.exists() else pd.DataFrame(columns=["dataset"])
    pf_path = path / "pair_features.csv"
    pair = _read_csv(pf_path) if pf_path.exists() else pd.DataFrame(columns=PAIR_COLUMNS)
    return KnowledgeBase(
        name=manifest.get("name", path.name),
        records=records,
        datasets=datasets,
        manifest=manifest,
        meta_features=meta,
        pair_features=pair,
        path=path,
    )


def save_kb(kb: KnowledgeBase, path: str | os.PathLike | None = None) -> Path:
    """Write a KB atomically per file (unique temp name, fsync, rename), the whole folder
    under the KB's lock so two writers never interleave their files. Returns the folder."""
    out = Path(path) if path is not None else kb_root() / kb.name
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KnowledgeBaseError(f"cannot create KB folder {out}: {exc}") from exc
    with file_lock(out / ".kb"):
        return _save_kb_files(kb, out)


def kb_lock(kb_or_path: KnowledgeBase | str | os.PathLike):  # noqa: ANN201 (filelock.FileLock)
    """The lock every writer of a KB folder holds (``save_kb`` and attach/score steps)."""
    path = kb_or_path.path if isinstance(kb_or_path, KnowledgeBase) else Path(kb_or_path)
    return file_lock(Path(path) / ".kb")


def _save_kb_files(kb: KnowledgeBase, out: Path) -> Path:
    records = kb.records.reindex(columns=RECORD_COLUMNS)
    datasets = kb.datasets.reindex(columns=DATASET_COLUMNS)
    manifest = dict(kb.manifest)
    manifest.setdefault("name", kb.name)
    manifest["format_version"] = FORMAT_VERSION
    manifest.setdefault("sources", sorted(records["source"].unique().tolist()))
    manifest.setdefault("targets", sorted(records["target"].unique().tolist()))
    manifest["n_records"] = int(len(records))
    m = kb.matrix() if not records.empty else pd.DataFrame()
    manifest["n_cells"] = int(np.isfinite(m.to_numpy(dtype=float)).sum()) if not m.empty else 0
    files = {"records.csv": records, "datasets.csv": datasets}
    if kb.meta_features is not None and len(kb.meta_features):
        files["meta_features.csv"] = kb.meta_features
    if kb.pair_features is not None and len(kb.pair_features):
        files["pair_features.csv"] = kb.pair_features.reindex(columns=PAIR_COLUMNS)
    for fname, df in files.items():
        with atomic_path(out / fname) as tmp:
            df.to_csv(tmp, index=False)  # full precision: a transcription must round-trip exactly
    manifest["files"] = sorted(list(files) + ["manifest.json"])
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2, default=str) + "\n")
    kb.path = out
    return out


def list_kbs(root: Path | None = None) -> list[str]:
    root = root or kb_root()
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "manifest.json").exists())
