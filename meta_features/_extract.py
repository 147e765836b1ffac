"""Running the registered extractors: group names, the name list, and the cached extraction.

The built-in extractor modules (``dataset_features``, ``image_features``) register their
groups when imported; they are imported on first use, since ``image_features`` pulls in
scikit-image, which is slow to import.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict

import numpy as np
import pandas as pd

from imagesets import Card, ImageSet, atomic_write_text
from meta_features import _registry
from meta_features._common import FEATURES_VERSION, MetaFeatureError, cache_dir
from meta_features._prepare import Prepared, prepare
from meta_features._registry import _REGISTRY, GROUP_ORDER

_MEMO: OrderedDict[str, pd.Series] = OrderedDict()
_MEMO_MAX = 64


def _ensure_builtin() -> None:
    import meta_features.dataset_features  # noqa: F401
    import meta_features.image_features  # noqa: F401


def _groups(groups: list[str] | tuple[str, ...] | None) -> list[str]:
    _ensure_builtin()
    known = [g for g in GROUP_ORDER if g in _REGISTRY] + sorted(set(_REGISTRY) - set(GROUP_ORDER))
    if groups is None:
        return known
    bad = [g for g in groups if g not in _REGISTRY]
    if bad:
        raise MetaFeatureError(f"unknown meta-feature group(s) {bad} (known: {', '.join(known)})")
    return [g for g in known if g in groups]


def _synthetic_set() -> ImageSet:
    """A tiny labelled set on which every extractor returns its full name list."""
    rng = np.random.default_rng(0)
    n = 24
    images = rng.integers(0, 256, size=(n, 28, 28, 3), dtype=np.uint8)
    labels = np.arange(n) % 3
    card = Card("synthetic", n, 3, {"a": 8, "b": 8, "c": 8}, 3, {}, {"8": n}, {"png": n}, {}, {}, True,
                0, {}, "synthetic", 28)
    return ImageSet("synthetic", images, labels, ["a", "b", "c"], None, [str(i) for i in range(n)], card,
                    np.tile(np.array([[30, 40]], dtype=np.int32), (n, 1)))


def list_meta_features() -> dict[str, list[str]]:
    """group -> full feature names, discovered by running every extractor on a tiny set."""
    groups = _groups(None)
    names = _registry._NAMES
    if names is None or set(names) != set(groups):
        prep = prepare(_synthetic_set())
        names = _registry._NAMES = {g: [f"{g}.{k}" for fn in _REGISTRY[g] for k in fn(prep)] for g in groups}
    return {g: list(v) for g, v in names.items()}


def _extractor_ids(groups: list[str]) -> list[list[str]]:
    """Per group, each registered extractor's name and a digest of its code: adding, removing
    or editing an extractor changes the cache key, so a cached row never lacks a feature."""
    def ident(fn) -> str:  # noqa: ANN001
        code = getattr(fn, "__code__", None)
        body = repr((code.co_code, code.co_consts)).encode() if code is not None else b""
        return f"{fn.__module__}.{fn.__qualname__}:{hashlib.blake2b(body, digest_size=6).hexdigest()}"

    return [[ident(fn) for fn in _REGISTRY[g]] for g in groups]


def _cache_key(fingerprint: str, groups: list[str], random_state: int, probe: str) -> str:
    from meta_features._probe import probe_digest

    raw = json.dumps([FEATURES_VERSION, fingerprint, groups, _extractor_ids(groups), random_state,
                      probe, probe_digest()])
    return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


def _disk_get(key: str) -> pd.Series | None:
    p = cache_dir() / "meta_features" / f"{key}.json"
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return pd.Series({k: (math.nan if v is None else float(v)) for k, v in d.items()}, dtype=float)


def _disk_put(key: str, s: pd.Series) -> None:
    p = cache_dir() / "meta_features" / f"{key}.json"
    try:  # unique temp name + rename: two processes caching the same set never collide
        atomic_write_text(p, json.dumps({k: (None if not np.isfinite(v) else float(v)) for k, v in s.items()}))
    except OSError:  # a read-only home must not break extraction
        pass


def compute_meta_features(prep: Prepared, groups: list[str]) -> pd.Series:
    """Run the extractors of ``groups`` on a prepared view (no caching)."""
    out: dict[str, float] = {}
    for g in groups:
        for fn in _REGISTRY[g]:
            for k, v in fn(prep).items():
                out[f"{g}.{k}"] = float(v) if v is not None and np.isfinite(v) else math.nan
    return pd.Series(out, dtype=float)


def extract_meta_features(
    imageset: ImageSet,
    groups: list[str] | None = None,
    random_state: int = 0,
    *,
    probe: str = "default",
    cache: bool = True,
    prepared: Prepared | None = None,
) -> pd.Series:
    """Meta-features of a dataset: ``group.name -> float`` (NaN when not computable).

    Deterministic for a given content (file order, the side it was read at and a grey set's
    3-channel replica do not change grey-level values). Cached by ``imageset.fingerprint()``
    in memory and under ``$CATSCANS_CACHE`` (default ``~/.cache/catscans``). ``prepared``
    lets a caller that already holds the canonical view (``profile_dataset``) skip redoing it.
    """
    gs = _groups(groups)
    key = _cache_key(imageset.fingerprint(), gs, random_state, probe) if cache else ""
    if cache:
        hit = _MEMO.get(key)
        if hit is None:
            hit = _disk_get(key)
        if hit is not None:
            _MEMO[key] = hit
            return hit.copy()
    if prepared is None:
        prepared = prepare(imageset, random_state, probe=probe)
    s = compute_meta_features(prepared, gs)
    if cache:
        _MEMO[key] = s
        while len(_MEMO) > _MEMO_MAX:
            _MEMO.popitem(last=False)
        _disk_put(key, s)
    return s.copy()


def clear_memory_cache() -> None:
    """Forget in-memory results (tests use it to prove the disk cache and determinism)."""
    _MEMO.clear()
