"""Derived target tasks: few-class, low-data and low-resolution tasks cut from a parent set.

A KB learns how targets differ only from targets, and the shared data hold a dozen
sets. Tasks cut from them add targets, but never independent ones: each declares its
``parent``, and every evaluation groups a task with its parent (and the parent's
twins), so a derived task and its parent are never on both sides of a split. The
name is the definition: change a task's definition and give it a new name, or its
stored cells would mix two tasks.

Adding one is one entry in :data:`DERIVED` (or :func:`register_derived`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from imagesets import ImageSet, ImageSetError

__all__ = ["DerivedTask", "DERIVED", "register_derived", "derive", "is_derived", "parent_of", "root_of",
           "eval_overrides"]


@dataclass(frozen=True)
class DerivedTask:
    name: str
    parent: str
    kind: str  # classes | low_data | resolution
    description: str
    classes: tuple[tuple[str, ...], ...] = ()  # kind=classes: each tuple of parent classes -> one class
    class_names: tuple[str, ...] = ()  # names of the new classes (default: the joined parent names)
    n_per_class: int = 0  # kind=low_data: training images per class in every seed
    low_side: int = 0  # kind=resolution: images go down to this side and back up

    def to_dict(self) -> dict:
        return {"parent": self.parent, "kind": self.kind, "description": self.description,
                "classes": [list(c) for c in self.classes], "class_names": list(self.class_names),
                "n_per_class": self.n_per_class, "low_side": self.low_side}


DERIVED: dict[str, DerivedTask] = {}


def register_derived(task: DerivedTask) -> DerivedTask:
    if task.kind not in ("classes", "low_data", "resolution"):
        raise ValueError(f"derived task {task.name}: unknown kind {task.kind}")
    DERIVED[task.name] = task
    return task


for _t in (
    DerivedTask("blood_neutrophil_lymphocyte", "pbc_blood", "classes",
                "two white-cell types (neutrophil vs lymphocyte)", (("neutrophil",), ("lymphocyte",))),
    DerivedTask("blood_granulocytes", "pbc_blood", "classes",
                "granulocytes (neutrophil, eosinophil, basophil, ig) vs the other four cell types",
                (("neutrophil", "eosinophil", "basophil", "ig"), ("erythroblast", "lymphocyte", "monocyte", "platelet")),
                ("granulocyte", "other")),
    DerivedTask("derm_melanoma_nevus", "ham10000_derm", "classes", "melanoma vs nevus", (("mel",), ("nv",))),
    DerivedTask("brain_glioma_meningioma", "brain_tumor_mri", "classes", "glioma vs meningioma",
                (("glioma",), ("meningioma",))),
    DerivedTask("brain_tumor_any", "brain_tumor_mri", "classes", "any tumour vs no tumour",
                (("glioma", "meningioma", "pituitary"), ("notumor",)), ("tumor", "notumor")),
    DerivedTask("pneumoniamnist_20pc", "pneumoniamnist", "low_data", "pneumoniamnist with 20 training images per class",
                n_per_class=20),
    DerivedTask("cifar10_10pc", "cifar10_subset", "low_data", "cifar10_subset with 10 training images per class",
                n_per_class=10),
    DerivedTask("retinamnist_lowres", "retinamnist", "resolution", "retinamnist seen at 14 px (down, then back up)",
                low_side=14),
    DerivedTask("fashion_tops", "fashion_mnist_subset", "classes", "T-shirt/top vs shirt vs pullover vs coat",
                (("T-shirt/top",), ("Shirt",), ("Pullover",), ("Coat",))),
):
    register_derived(_t)


def is_derived(name: str) -> bool:
    return name in DERIVED


def parent_of(name: str) -> str | None:
    task = DERIVED.get(name)
    return task.parent if task else None


def root_of(name: str) -> str:
    """The shared set a (possibly nested) derived task is cut from; a set is its own root."""
    seen = set()
    while name in DERIVED and name not in seen:
        seen.add(name)
        name = DERIVED[name].parent
    return name


def eval_overrides(name: str) -> dict:
    """Per-target changes to the protocol's evaluation (a low-data task's train size)."""
    task = DERIVED.get(name)
    if task is not None and task.kind == "low_data":
        return {"n_train": 0, "n_per_class": task.n_per_class}
    return {}


def _shrink(images: np.ndarray, low_side: int) -> np.ndarray:
    from PIL import Image

    side = images.shape[1]
    out = np.empty_like(images)
    for i, img in enumerate(images):
        arr = img[..., 0] if img.shape[-1] == 1 else img
        small = Image.fromarray(arr).resize((low_side, low_side), Image.Resampling.BILINEAR)
        back = np.asarray(small.resize((side, side), Image.Resampling.BILINEAR))
        out[i] = back[..., None] if img.shape[-1] == 1 else back
    return out


def derive(parent: ImageSet, task: DerivedTask) -> ImageSet:
    """The task's ImageSet from its parent's (already read at the protocol's side and channels)."""
    if parent.labels is None:
        raise ImageSetError(f"derived task {task.name}: parent {task.parent} has no labels")
    if task.kind == "classes":
        names = list(parent.class_names)
        new_label = np.full(len(parent), -1, dtype=np.int64)
        for k, group in enumerate(task.classes):
            for cname in group:
                if cname not in names:
                    raise ImageSetError(f"derived task {task.name}: {task.parent} has no class '{cname}'")
                new_label[parent.labels == names.index(cname)] = k
        keep = np.flatnonzero(new_label >= 0)
        sub = parent.subset(keep, name=task.name)
        sub.labels = new_label[keep]
        sub.class_names = list(task.class_names or ["+".join(g) for g in task.classes])
        counts = np.bincount(sub.labels, minlength=len(sub.class_names))
        sub.card = replace(sub.card, n_classes=len(sub.class_names),
                           class_counts={c: int(n) for c, n in zip(sub.class_names, counts, strict=True)})
        return sub
    sub = parent.subset(np.arange(len(parent)), name=task.name)
    if task.kind == "resolution":
        sub.images = _shrink(sub.images, task.low_side)
    return sub
