"""The probe and the meta-feature scaler never see a KB target (no LOTO leakage through them)."""

from __future__ import annotations

import json

from experiments import artifacts_dir, list_kbs, load_kb
from meta_features._common import REFERENCE_STEMS


def _target_image_sets() -> set[str]:
    """Every shared image set that stands for a KB target, or for a twin of one."""
    out: set[str] = set()
    for name in list_kbs():
        kb = load_kb(name)
        targets = set(kb.targets)
        for pair in kb.manifest.get("twins", []) or []:
            if targets & set(pair):
                targets |= set(pair)
        for t in targets:
            stem = kb.card(t).get("image_set")
            out.add(stem if isinstance(stem, str) and stem else t)
    return out


def test_reference_sets_are_never_targets() -> None:
    assert not set(REFERENCE_STEMS) & _target_image_sets()


def test_shipped_probe_and_scaler_use_reference_sets_only() -> None:
    """The probe and scaler are fit on the reference sets only (never on a medical target)."""
    probe = json.loads((artifacts_dir() / "probe" / "probe.json").read_text())
    scaler = json.loads((artifacts_dir() / "profiles" / "scaler.json").read_text())
    assert set(probe["training_data"]["sets"]) <= set(REFERENCE_STEMS)
    assert set(scaler["fit_on"]) <= set(REFERENCE_STEMS)


def test_shipped_probe_never_saw_a_target() -> None:
    probe = json.loads((artifacts_dir() / "probe" / "probe.json").read_text())
    assert not set(probe["training_data"]["sets"]) & _target_image_sets()


def test_reference_sets_are_procedural_and_need_no_shared_data(monkeypatch, tmp_path) -> None:
    """The probe's and scaler's data come from code, not from any file a KB could also use: with
    the shared data folder pointed at an empty directory they are generated all the same, and the
    same seed gives the same pixels (another seed does not)."""
    import numpy as np

    from meta_features._synthetic import SYNTHETIC_SETS, synthetic_arrays

    monkeypatch.setenv("CATSCANS_DATA", str(tmp_path))
    assert set(REFERENCE_STEMS) == set(SYNTHETIC_SETS)
    for name in REFERENCE_STEMS:
        a, la, _ = synthetic_arrays(name, n_per_class=3, seed=0)
        b, lb, _ = synthetic_arrays(name, n_per_class=3, seed=0)
        c, _, _ = synthetic_arrays(name, n_per_class=3, seed=1)
        assert a.shape == (30, 64, 64) and np.array_equal(a, b) and np.array_equal(la, lb)
        assert not np.array_equal(a, c)
        assert sorted(set(la.tolist())) == list(range(10))


def test_shipped_scaler_was_fit_on_the_reference_sets() -> None:
    """scaler.json is fit on exactly the procedural reference sets (no shared set among them)."""
    scaler = json.loads((artifacts_dir() / "profiles" / "scaler.json").read_text())
    assert sorted(scaler["fit_on"]) == sorted(REFERENCE_STEMS)
