"""meta_features: dataset meta-representations, similarities and transferability estimates.

Public API (the meta-model and ``recommend`` call these):
``extract_meta_features`` / ``register`` / ``list_meta_features`` (named groups of extractors),
``embed`` (probe embeddings), ``DatasetProfile`` / ``profile_dataset`` / ``save_profile`` /
``load_profile`` / ``profiles_dir``, ``pair_similarities``, ``domain_distance``,
``build_shipped_profiles`` (attaching to KBs: ``catscans kb attach``), Task2Vec
(``task2vec_embedding``, ``trivial_embedding``, ``Task2VecEmbedding``, ``Task2VecError``), the
transferability estimators (``logme``, ``leep``, ``nleep``, ``nce``, ``hscore``,
``knn_accuracy``, ``estimate_all``, ``score_loaded``), and loading a source checkpoint for
them (``load_source``, ``channel_policy``, ``CheckpointFeatureError``).
"""

from meta_features._checkpoint_features import CheckpointFeatureError, channel_policy, load_source
from meta_features._common import PROFILE_MAX_IMAGES, PROFILE_SIDE, MetaFeatureError
from meta_features._extract import extract_meta_features, list_meta_features
from meta_features._probe import ProbeError, embed, load_probe, probe_digest, probe_info
from meta_features._registry import register
from meta_features.dataset_features import modality_code
from meta_features.profiles import (
    DatasetProfile,
    fit_scaler,
    list_profiles,
    load_profile,
    load_scaler,
    load_shipped_profiles,
    profile_dataset,
    profiles_dir,
    save_profile,
)
from meta_features.similarity import (
    SIMILARITIES,
    domain_distance,
    frechet_distance,
    mmd_rbf,
    ot_distance,
    pair_similarities,
    register_similarity,
)
from meta_features.task2vec import (
    Task2VecEmbedding,
    Task2VecError,
    task2vec_embedding,
    trivial_embedding,
)
from meta_features.transferability import (
    ESTIMATORS,
    TransferabilityError,
    estimate_all,
    hscore,
    knn_accuracy,
    leep,
    logme,
    logme_reference,
    nce,
    nleep,
    register_estimator,
    score_loaded,
)


def build_shipped_profiles(*args, **kwargs):
    """See :func:`meta_features.build_profiles.build_shipped_profiles` (lazy: needs ../shared)."""
    from meta_features.build_profiles import build_shipped_profiles as _build

    return _build(*args, **kwargs)


__all__ = [
    "PROFILE_MAX_IMAGES", "PROFILE_SIDE", "DatasetProfile", "MetaFeatureError", "ProbeError",
    "ESTIMATORS", "TransferabilityError", "build_shipped_profiles", "estimate_all", "hscore",
    "knn_accuracy", "leep", "logme", "logme_reference", "nce", "nleep", "probe_digest", "score_loaded", "domain_distance", "embed", "extract_meta_features",
    "fit_scaler", "frechet_distance", "list_meta_features", "list_profiles", "load_probe",
    "load_profile", "load_scaler", "load_shipped_profiles", "mmd_rbf", "modality_code", "ot_distance",
    "pair_similarities", "probe_info", "profile_dataset", "profiles_dir", "register", "save_profile",
    "CheckpointFeatureError", "channel_policy", "load_source",
    "SIMILARITIES", "register_similarity", "register_estimator",
    "Task2VecEmbedding", "Task2VecError", "task2vec_embedding", "trivial_embedding",
]
