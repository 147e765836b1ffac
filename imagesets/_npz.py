"""Array sources: a MedMNIST-style or plain ``.npz``, and ``medmnist:<flag>`` local copies.

Two layouts are read: MedMNIST's ``{train,val,test}_images`` / ``{split}_labels`` (labels
N x 1) and the plain ``images`` / ``labels`` [/ ``split`` / ``class_names``] that the
``../shared/data`` files use. Multi-label targets (labels N x k, k > 1, e.g. ChestMNIST) are
refused: every consumer of an :class:`ImageSet` expects one class per image.
"""

from __future__ import annotations

import functools
import os
import socket
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from imagesets._pixels import stretch_to_uint8
from imagesets._types import ImageSetError

SPLITS = ("train", "val", "test")


def _labels_1d(lab: np.ndarray, where: str) -> np.ndarray:
    lab = np.asarray(lab)
    if lab.ndim == 2 and lab.shape[1] == 1:
        lab = lab[:, 0]
    if lab.ndim != 1:
        raise ImageSetError(f"{where}: labels have shape {lab.shape}; only one class per image is supported")
    if not np.issubdtype(lab.dtype, np.integer):
        raise ImageSetError(f"{where}: labels must be integers, got {lab.dtype}")
    return lab.astype(np.int64)


def dense_labels(labels: np.ndarray, names: list[str] | None, where: str) -> tuple[np.ndarray, list[str]]:
    """Labels 0..K-1 and their K names, or a one-line error.

    Negative labels (e.g. -1 for "unlabelled") are refused: a set is labelled or not. Labels
    inside the declared ``class_names`` keep their index (a class absent from the file still
    counts); without names, gaps are closed (labels {0, 7, 10**9} become 0, 1, 2 named "0",
    "7", "1000000000"), so a stray huge label never sizes an array.
    """
    if len(labels) == 0:
        return labels, list(names or [])
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0:
        n_neg = int((labels < 0).sum())
        raise ImageSetError(f"{where}: {n_neg} label(s) are negative (min {lo}); labels must be "
                            "0..K-1 (drop the labels array for an unlabelled set)")
    if names:
        if hi >= len(names):
            raise ImageSetError(f"{where}: label {hi} but only {len(names)} class_names")
        return labels, list(names)
    values, inverse = np.unique(labels, return_inverse=True)
    if hi + 1 == len(values):
        return labels, [str(k) for k in range(hi + 1)]
    return inverse.astype(np.int64), [str(int(v)) for v in values]


def _numeric(arr: np.ndarray, what: str, where: str) -> np.ndarray:
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ImageSetError(f"npz {where}: {what} have dtype {arr.dtype}; expected numbers "
                            "(uint8, uint16 or float)")
    return arr


def load_npz_arrays(path: Path) -> dict[str, Any]:
    """Raw arrays of either layout: images (N x H x W [x C]), labels|None, split|None, class_names|None."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ImageSetError(f"cannot read npz {path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ImageSetError(f"{path} is a single .npy array, not an npz archive of named arrays")
    try:
        return _npz_layout(path, data)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:  # object arrays, bad members
        raise ImageSetError(f"cannot read npz {path}: {str(exc).splitlines()[0]}") from exc


def _npz_layout(path: Path, data: Any) -> dict[str, Any]:
    with data:
        keys = set(data.files)
        if "images" in keys:
            images = data["images"]
            labels = _labels_1d(data["labels"], str(path)) if "labels" in keys else None
            split = data["split"].astype(str) if "split" in keys else None
            names = [str(c) for c in data["class_names"]] if "class_names" in keys else None
        elif any(f"{s}_images" in keys for s in SPLITS):
            parts = [s for s in SPLITS if f"{s}_images" in keys]
            images = np.concatenate([data[f"{s}_images"] for s in parts])
            has_lab = all(f"{s}_labels" in keys for s in parts)
            labels = (np.concatenate([_labels_1d(data[f"{s}_labels"], f"{path}:{s}") for s in parts])
                      if has_lab else None)
            split = np.concatenate([np.full(len(data[f"{s}_images"]), s) for s in parts])
            names = None
        else:
            raise ImageSetError(f"npz {path} has neither 'images' nor '{{train,val,test}}_images' "
                                f"(keys: {', '.join(sorted(keys)) or 'none'})")
    images = _numeric(images, "images", str(path))
    if names is not None and not all(names):
        raise ImageSetError(f"npz {path}: class_names has empty entries")
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3, 4)):
        raise ImageSetError(f"npz {path}: images have shape {images.shape}; expected N x H x W [x 1|3]")
    if labels is not None and len(labels) != len(images):
        raise ImageSetError(f"npz {path}: {len(images)} images but {len(labels)} labels")
    return {"images": images, "labels": labels, "split": split, "class_names": names}


def resize_array(img: np.ndarray, side: int, grey: bool) -> np.ndarray:
    """One array image -> side x side x {1,3} uint8 with the same policies as files."""
    from PIL import Image

    from imagesets._pixels import _to_small_array

    arr = stretch_to_uint8(img)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 4:
        return _to_small_array(Image.fromarray(np.ascontiguousarray(arr), mode="RGBA"), side, grey)
    return _to_small_array(Image.fromarray(np.ascontiguousarray(arr)), side, grey)


def medmnist_npz(flag_spec: str) -> tuple[Path, list[str] | None]:
    """Local path of ``medmnist:<flag>[_<size>]`` (download only when online) and its class names."""
    info, default_root, _version = medmnist_info()
    spec = flag_spec.strip().lower()
    flag, _, size = spec.partition("_")
    if flag not in info:
        raise ImageSetError(f"unknown MedMNIST flag '{flag}'; known: {', '.join(sorted(info))}")
    if size and size not in ("28", "64", "128", "224"):
        raise ImageSetError(f"MedMNIST size must be 28, 64, 128 or 224, got '{size}'")
    root = Path(os.environ.get("MEDMNIST_ROOT") or default_root or Path.home() / ".medmnist").expanduser()
    fname = f"{flag}.npz" if size in ("", "28") else f"{flag}_{size}.npz"
    names_map = info[flag].get("label", {})
    names = [str(names_map[k]) for k in sorted(names_map, key=int)] if names_map else None
    path = root / fname
    if path.is_file():
        return path, names
    if not _online():
        raise ImageSetError(f"medmnist:{spec} is not in {root} and there is no network to download it; "
                            f"put {fname} there or set MEDMNIST_ROOT")
    try:  # pragma: no cover - needs network
        import medmnist  # the full package imports torch: only paid when downloading

        cls = getattr(medmnist, info[flag]["python_class"])
        kwargs: dict[str, Any] = {"split": "train", "download": True, "root": str(root)}
        if size not in ("", "28"):
            kwargs["size"] = int(size)
        root.mkdir(parents=True, exist_ok=True)
        cls(**kwargs)
    except Exception as exc:  # noqa: BLE001 - any download failure is one line for the user
        raise ImageSetError(f"could not download medmnist:{spec} into {root}: {exc}") from exc
    if not path.is_file():
        raise ImageSetError(f"medmnist:{spec}: download finished but {path} is missing")
    return path, names


@functools.lru_cache(maxsize=1)
def medmnist_info() -> tuple[dict[str, Any], str | None, str]:
    """medmnist's ``(INFO, DEFAULT_ROOT, __version__)``, loaded from ``medmnist/info.py`` alone:
    ``import medmnist`` pulls in torch (seconds), which reading a local npz or writing KB
    cards never needs. The one loader of that table (the KB importer uses it too)."""
    import importlib.util

    found = importlib.util.find_spec("medmnist")
    if found is None or not found.submodule_search_locations:
        raise ImageSetError("medmnist:<flag> needs the 'medmnist' package (pip install catscans[medmnist])")
    info_path = Path(next(iter(found.submodule_search_locations))) / "info.py"
    spec = importlib.util.spec_from_file_location("_catscans_medmnist_info", info_path)
    if spec is None or spec.loader is None or not info_path.is_file():
        raise ImageSetError(f"the installed medmnist package has no {info_path.name}; reinstall it")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.INFO, getattr(module, "DEFAULT_ROOT", None), str(getattr(module, "__version__", "?"))


def _online(host: str = "zenodo.org", timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False
