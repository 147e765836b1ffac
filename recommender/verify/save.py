"""`verify --save-to-kb NAME`: the KB grows with every verified folder.

Only cells measured with the KB's own protocol (the last, full round) are added: the cheap
rounds used fewer images and epochs, and mixing them with the KB's numbers would mix two
measurements. Each record names the protocol hash, and the target's provenance is the
content fingerprint of the images as read (``ImageSet.fingerprint``), so a renamed copy of
the same folder is recognised and a different folder with the same name is not merged
with it. The KB is read, extended and written under its lock.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from experiments import load_kb, save_kb
from experiments.knowledge_base import kb_lock, resolve_kb_path
from recommender.verify.run import VerifyError, VerifyResult

__all__ = ["save_to_kb"]


def _target_name(kb, base: str, fp: str) -> str:  # noqa: ANN001 (KnowledgeBase)
    """The folder's name in the KB: its own, unless another dataset there already has that name."""
    verified = (kb.manifest.get("verified") or {})
    for name, info in verified.items():
        if info.get("fingerprint") == fp:
            return name
    taken = set(kb.datasets.get("name", pd.Series(dtype=str))) | set(kb.targets) | set(kb.sources)
    return base if base not in taken else f"{base}-{fp[:8]}"


def save_to_kb(result: VerifyResult, kb_name: str) -> dict:
    """Append ``result``'s full-protocol cells to KB ``kb_name``; returns what was added."""
    path = resolve_kb_path(kb_name)
    card = result.card
    rows = [r for r in result.rows if r["level"]["data"] >= 1 and r["level"]["epochs"] >= 1]
    if not rows:
        raise VerifyError("no cell was measured with the full KB protocol (raise --budget): nothing to save")
    with kb_lock(path):
        kb = load_kb(path)
        proto = kb.manifest.get("protocol") if isinstance(kb.manifest.get("protocol"), dict) else {}
        want = f"{proto.get('name')}@{proto.get('hash')}"
        if proto.get("hash") != result.protocol.split("@")[-1]:
            raise VerifyError(f"KB '{kb.name}' was measured with protocol {want}, this verify with "
                              f"{result.protocol}: its cells do not belong there")
        name = _target_name(kb, str(card.get("name") or "target"), result.fingerprint)
        seeds_mode = proto.get("evaluation", {}).get("mode", "seeds") == "seeds"
        new = pd.DataFrame([{
            "source": r["candidate"], "target": name, "metric": "roc_auc", "value": v,
            "fold": -1 if seeds_mode else i, "seed": i if seeds_mode else -1,
            "architecture": proto.get("arch", ""), "protocol": result.protocol, "study": "catscans verify",
            "file": f"fingerprint:{result.fingerprint}", "commit": "",
        } for r in rows for i, v in enumerate(r["per_seed"])])
        key = ["source", "target", "fold", "seed", "protocol"]
        old = kb.records
        if len(old):
            merged = old.merge(new[key], on=key, how="left", indicator=True)
            old = old[(merged["_merge"] == "left_only").to_numpy()]
        kb.records = pd.concat([old, new], ignore_index=True)
        if name not in set(kb.datasets.get("name", [])):
            kb.datasets = pd.concat([kb.datasets, pd.DataFrame([{
                "name": name, "role": "target", "domain": "", "modality": ",".join(card.get("modalities") or {}),
                "n_images": card.get("n_images"), "n_classes": card.get("n_classes"), "channels": card.get("channels"),
                "resolution": card.get("side"), "task": "binary" if card.get("n_classes") == 2 else "multiclass",
                "licence": "", "image_set": "", "group": name,
                "provenance": f"user folder verified by catscans verify; ImageSet fingerprint {result.fingerprint}",
            }])], ignore_index=True)
        man = kb.manifest
        man["targets"] = list(dict.fromkeys([*(man.get("targets") or kb.targets), name]))
        man["sources"] = list(dict.fromkeys([*(man.get("sources") or kb.sources), *new["source"]]))
        if man.get("groups") is not None:
            man["groups"] = {**man["groups"], name: name}
        man.setdefault("verified", {})[name] = {
            "fingerprint": result.fingerprint, "target": result.target, "protocol": result.protocol,
            "saved": datetime.now(timezone.utc).isoformat(timespec="seconds"), "n_records": int(len(new)),
        }
        save_kb(kb, path)
    return {"kb": kb.name, "path": str(path), "target": name, "records": int(len(new)),
            "sources": sorted(set(new["source"]))}
