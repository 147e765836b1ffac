"""Units of experiments: model factory + checkpoints, protocols + hash, stores, sampling, AUC."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments import ModelError, create_model, list_models, load_checkpoint, save_checkpoint
from experiments.data import stratified_take
from experiments.protocol import ProtocolError, list_protocols, load_protocol
from experiments.store import FolderStore, SQLiteStore, StoreError, open_store
from experiments.training import roc_auc
from imagesets import UserError


@pytest.mark.parametrize("name", ["resnet-tiny", "resnet-mini", "resnet18"])
def test_models_expose_features_and_head(name: str) -> None:
    m = create_model(name, num_classes=5, in_chans=1).eval()
    x = torch.randn(2, 1, 32, 32)
    f = m.forward_features(x)
    assert f.ndim == 2 and f.shape[0] == 2 and f.shape[1] == m.head.in_features
    assert isinstance(m.head, torch.nn.Linear) and m(x).shape == (2, 5)
    assert {"resnet-tiny", "resnet-mini", "resnet18", "resnet50"} <= set(list_models())


def test_unknown_model_and_tiny_pretrained_are_user_errors() -> None:
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        create_model("nope", 2)
    with pytest.raises(ModelError, match="no published weights"):
        create_model("resnet-tiny", 2, pretrained=True)
    assert issubclass(ModelError, UserError)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_checkpoint_round_trip(tmp_path, suffix: str) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    m = create_model("resnet-tiny", 3).eval()
    path = tmp_path / f"src{suffix}"
    if suffix == ".safetensors":
        save_checkpoint(m, path, {"class_names": ["a", "b", "c"], "side": 28, "source": "src"})
    else:
        torch.save({"state_dict": m.state_dict(), "meta": {"arch": "resnet-tiny", "num_classes": 3}}, path)
    m2, meta = load_checkpoint(path)
    x = torch.randn(4, 3, 28, 28)
    assert torch.equal(m(x), m2.eval()(x))
    assert meta["arch"] == "resnet-tiny" and meta["num_classes"] == 3
    if suffix == ".safetensors":
        assert meta["class_names"] == ["a", "b", "c"] and meta["in_chans"] == 3
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    (tmp_path / "bad.json").write_text('{"arch": "resnet-tiny", "num_classes": 3}')
    with pytest.raises(ModelError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "bad.safetensors")


def test_presets_load_and_hash_is_stable_and_selective() -> None:
    assert {"cats-scans", "medmnist-transfer", "cpu-mini"} <= set(list_protocols())
    for name in list_protocols():
        p = load_protocol(name)
        assert p.hash == load_protocol(name).hash and len(p.hash) == 16
    base = load_protocol("cpu-mini")
    assert "kermany_cxr" not in base.targets and ("kermany_cxr", "pneumoniamnist") in base.twins
    assert load_protocol("cpu-mini", ["sources=breastmnist"]).hash == base.hash  # grid choice: not hashed
    assert load_protocol("cpu-mini", ["evaluation.repeats=7"]).hash == base.hash  # seed i is seed i
    changed = load_protocol("cpu-mini", ["finetune.lr=0.5"])
    assert changed.finetune.lr == 0.5 and changed.hash != base.hash
    folds = load_protocol("cats-scans")
    assert load_protocol("cats-scans", ["evaluation.repeats=3"]).hash != folds.hash  # folds partition


@pytest.mark.parametrize("override,msg", [
    ("finetune.nope=1", "unknown protocol key"),
    ("nosuch.lr=1", "unknown section"),
    ("evaluation.mode=sometimes", "seeds or folds"),
    ("finetune.lr", "key=value"),
])
def test_bad_overrides(override: str, msg: str) -> None:
    with pytest.raises(ProtocolError, match=msg):
        load_protocol("cpu-mini", [override])


@pytest.mark.parametrize("kind", ["folder", "sqlite"])
def test_store_first_write_wins(tmp_path, kind: str) -> None:  # noqa: ANN001
    store = FolderStore(tmp_path) if kind == "folder" else SQLiteStore(tmp_path / "r.db")
    assert store.put({"key": "k1", "kind": "finetune", "value": 0.7})
    assert not store.put({"key": "k1", "kind": "finetune", "value": 0.1})
    assert store.put({"key": "k2", "kind": "finetune", "value": 0.9})
    assert store.keys() == {"k1", "k2"} and store.get("k1")["value"] == 0.7
    out = store.compact(tmp_path / "compact")
    assert out is not None and len(__import__("pandas").read_parquet(out)) == 2


def test_open_store_urls(tmp_path) -> None:  # noqa: ANN001
    assert isinstance(open_store(None, tmp_path), FolderStore)
    assert isinstance(open_store(f"sqlite:///{tmp_path}/x.db", tmp_path), SQLiteStore)
    with pytest.raises(StoreError, match="unsupported store URL"):
        open_store("postgresql://host/db", tmp_path)


def test_stratified_take_keeps_every_class() -> None:
    y = np.array([0] * 90 + [1] * 9 + [2] * 1)
    idx = stratified_take(y, 20, np.random.default_rng(0))
    assert len(idx) == 20 and len(set(idx)) == 20 and set(y[idx]) == {0, 1, 2}
    per = stratified_take(y, 0, np.random.default_rng(0), per_class=5)
    assert np.bincount(y[per]).tolist() == [5, 5, 1]


def test_roc_auc_binary_multiclass_and_missing_class() -> None:
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])) == 1.0
    p3 = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.2, 0.7, 0.1]])
    assert roc_auc(np.array([0, 1, 0, 1]), p3) == 1.0  # class 2 absent: dropped, not an error
    assert np.isnan(roc_auc(np.array([1, 1]), p3[:2]))
