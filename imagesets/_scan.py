"""Find the files of a folder or CSV manifest and what each one is labelled, before decoding.

Layout rules (so a user can predict what ``inspect`` will say):

* Hidden files and folders (name starts with ``.``) and ``__MACOSX`` are ignored entirely.
* If the top level has sub-folders named ``train``/``val``/``test`` (case-insensitive;
  ``valid``/``validation`` count as ``val``), that level is the split; other top-level
  folders are then ignored (listed as skipped "not in a class folder").
* Below the (optional) split level, sub-folders are classes; everything nested inside a
  class folder, at any depth, belongs to that class. Files lying next to class folders
  are skipped as "not in a class folder".
* A folder (or split folder) with no sub-folders is a flat, unlabelled set.
* Every other non-hidden file is a candidate: the decoder decides if it is an image.
* Symlinked folders below the root are never followed (a link to ``/`` is not a class, a
  link back up is not a loop): each is skipped as "symlinked folder". Symlinked files are
  read; a broken or looping link is skipped as "broken symlink". The root may be a link.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from imagesets._types import ImageSetError

SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_IGNORED = {"__MACOSX", "Thumbs.db", "desktop.ini"}


@dataclass
class Listing:
    """Candidate files with their class and split (None when the source has none)."""

    paths: list[str] = field(default_factory=list)
    classes: list[str | None] = field(default_factory=list)
    splits: list[str | None] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (path, reason, detail)
    labelled: bool = False

    def add(self, path: str, cls: str | None, split: str | None) -> None:
        self.paths.append(path)
        self.classes.append(cls)
        self.splits.append(split)


def _visible(name: str) -> bool:
    return not name.startswith(".") and name not in _IGNORED


def _link_fault(path: str) -> tuple[str, str] | None:
    """(reason, detail) for a symlink that must not be followed, else None (a linked file)."""
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    if not os.path.exists(path):  # dangling, or a loop (ELOOP makes exists() False)
        return "broken symlink", f"-> {target}"
    if os.path.isdir(path):
        return "symlinked folder", f"not followed: -> {target}"
    return None


def _entries(folder: Path, skipped: list[tuple[str, str, str]]) -> tuple[list[Path], list[Path]]:
    """(sub-folders, files) of ``folder``, visible only, sorted by name; symlinked folders
    and broken links go to ``skipped`` (see the module rules)."""
    dirs, files = [], []
    try:
        with os.scandir(folder) as it:
            for e in sorted(it, key=lambda e: e.name):
                if not _visible(e.name):
                    continue
                try:
                    if e.is_symlink() and (fault := _link_fault(e.path)) is not None:
                        skipped.append((e.path, *fault))
                    elif e.is_dir(follow_symlinks=True):
                        dirs.append(Path(e.path))
                    elif e.is_file(follow_symlinks=True):
                        files.append(Path(e.path))
                except OSError as exc:
                    skipped.append((e.path, "unreadable entry", exc.strerror or str(exc)))
    except PermissionError as exc:
        raise ImageSetError(f"cannot read folder {folder}: permission denied") from exc
    except OSError as exc:
        raise ImageSetError(f"cannot read folder {folder}: {exc.strerror or exc}") from exc
    return dirs, files


def _walk_files(folder: Path, skipped: list[tuple[str, str, str]]) -> list[str]:
    """All visible files under ``folder`` at any depth (hidden dirs pruned, symlinked
    folders not followed but listed in ``skipped``), sorted."""
    found: list[str] = []

    def unreadable(exc: OSError) -> None:
        skipped.append((str(exc.filename or folder), "unreadable entry", exc.strerror or str(exc)))

    for root, dirs, files in os.walk(folder, followlinks=False, onerror=unreadable):
        keep = []
        for d in sorted(d for d in dirs if _visible(d)):
            full = os.path.join(root, d)
            if os.path.islink(full):
                skipped.append((full, *(_link_fault(full) or ("symlinked folder", "not followed"))))
            else:
                keep.append(d)
        dirs[:] = keep
        for f in sorted(f for f in files if _visible(f)):
            full = os.path.join(root, f)
            fault = _link_fault(full) if os.path.islink(full) else None
            if fault is not None:
                skipped.append((full, *fault))
            else:
                found.append(full)
    return found


def _scan_level(folder: Path, split: str | None, listing: Listing,
                entries: tuple[list[Path], list[Path]] | None = None) -> None:
    dirs, files = entries if entries is not None else _entries(folder, listing.skipped)
    if not dirs:
        for f in files:
            listing.add(str(f), None, split)
        return
    listing.labelled = True
    for f in files:
        listing.skipped.append((str(f), "not in a class folder", ""))
    for d in dirs:
        for f in _walk_files(d, listing.skipped):
            listing.add(f, d.name, split)


def scan_folder(root: Path) -> Listing:
    """List an ImageFolder (optionally split) or a flat folder; see the module rules."""
    listing = Listing()
    dirs, files = _entries(root, listing.skipped)
    split_dirs = [d for d in dirs if d.name.lower() in SPLIT_NAMES]
    if not split_dirs:
        _scan_level(root, None, listing, (dirs, files))
    else:
        for f in files:
            listing.skipped.append((str(f), "not in a class folder", ""))
        for d in dirs:
            if d.name.lower() not in SPLIT_NAMES:
                listing.skipped.extend((f, "not in a class folder", "") for f in _walk_files(d, listing.skipped))
        for d in split_dirs:
            _scan_level(d, SPLIT_NAMES[d.name.lower()], listing)
    if listing.labelled:  # a flat split next to labelled splits cannot be labelled: skip it
        keep = [i for i, c in enumerate(listing.classes) if c is not None]
        if len(keep) != len(listing.paths):
            listing.skipped.extend((listing.paths[i], "not in a class folder", "")
                                   for i in range(len(listing.paths)) if listing.classes[i] is None)
            listing.paths = [listing.paths[i] for i in keep]
            listing.classes = [listing.classes[i] for i in keep]
            listing.splits = [listing.splits[i] for i in keep]
    return listing


def scan_csv(csv_path: Path) -> Listing:
    """A manifest with a ``path`` column (relative to the CSV), optional ``label``, ``split``."""
    import pandas as pd

    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ImageSetError(f"cannot parse CSV manifest {csv_path}: {str(exc).splitlines()[0]}") from exc
    cols = {c.strip().lower(): c for c in df.columns}
    if "path" not in cols:
        raise ImageSetError(
            f"CSV manifest {csv_path} needs a 'path' column (optional 'label', 'split'); "
            f"found columns: {', '.join(map(str, df.columns)) or 'none'}")
    listing = Listing(labelled="label" in cols)
    base = csv_path.parent
    for _, row in df.iterrows():
        rel = row[cols["path"]].strip()
        if not rel:
            continue
        p = Path(rel)
        p = p if p.is_absolute() else base / p
        label = row[cols["label"]].strip() if listing.labelled else None
        split = None
        if "split" in cols:
            raw = row[cols["split"]].strip().lower()
            split = SPLIT_NAMES.get(raw, raw or None)
        if listing.labelled and not label:
            listing.skipped.append((str(p), "no label", "empty label in CSV"))
            continue
        if not p.is_file():
            listing.skipped.append((str(p), "missing file", "listed in CSV"))
            continue
        listing.add(str(p), label, split)
    return listing
