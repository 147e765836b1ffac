"""Validation of a shipped model folder (``artifacts/models/<kb>/``) before anything uses it.

Why: LightGBM's text parser trusts its input. A truncated ``main.txt`` aborts the whole
interpreter (SIGABRT/SIGSEGV, no Python exception to catch), and a reordered
``features.json`` silently feeds columns to the wrong splits. So every file is checked
here first, and a problem becomes one :class:`RecommenderError` line:

- ``manifest.json`` / ``features.json`` parse as JSON objects (the manifest's methods are
  checked against the method registry by ``meta_model.load_recommender``);
- each LightGBM text has its header, its trees exactly as long as the header's
  ``tree_sizes`` say, the ``end of trees`` / ``end of parameters`` markers and the final
  ``pandas_categorical`` line (what a truncation or an edit breaks), and its
  ``feature_names`` equal, in order, the list ``features.json`` gives for it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from imagesets import UserError

__all__ = ["ModelFileError", "booster_text", "model_text_problem", "read_json"]


class ModelFileError(UserError):
    """A shipped model file that is missing, corrupt or inconsistent with its siblings."""


def _rebuild(kb: str) -> str:
    return f"rebuild it: catscans evaluate-meta --kb {kb} --save"


def read_json(path: Path, kb: str) -> dict:
    """``path`` as a JSON object, or a one-line error saying how to rebuild the model."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"model for KB '{kb}' lacks {path.name}; {_rebuild(kb)}") from None
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path} is not valid JSON ({str(exc).splitlines()[0]}); {_rebuild(kb)}") from exc
    if not isinstance(doc, dict):
        raise ModelFileError(f"{path} must hold a JSON object; {_rebuild(kb)}")
    return doc


_HEADER_SIZES = re.compile(rb"^tree_sizes=(.*)$", re.M)
_HEADER_NAMES = re.compile(rb"^feature_names=(.*)$", re.M)


def model_text_problem(raw: bytes, expected: list[str]) -> str | None:
    """What is wrong with a LightGBM model text (None: safe to hand to LightGBM)."""
    if not raw.startswith(b"tree\nversion="):
        return "not a LightGBM model text (no 'tree' header)"
    names, sizes = _HEADER_NAMES.search(raw), _HEADER_SIZES.search(raw)
    end = raw.find(b"end of trees")
    if names is None or sizes is None or end < 0:
        return "truncated (no feature_names / tree_sizes header or no 'end of trees')"
    try:
        tree_sizes = [int(x) for x in sizes.group(1).split()]
    except ValueError:
        return "damaged tree_sizes header"
    first = raw.find(b"Tree=0\n")
    block = (end - first) if first >= 0 else 0
    if sum(tree_sizes) != block or raw.count(b"\nTree=") != len(tree_sizes):
        return f"trees take {block} bytes but the header says {sum(tree_sizes)} (truncated or edited)"
    tail = raw.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    if b"end of parameters" not in raw[end:] or not tail.startswith(b"pandas_categorical:"):
        return "truncated after the trees (no 'end of parameters' / 'pandas_categorical' line)"
    try:
        json.loads(tail.split(b":", 1)[1])
    except ValueError:
        return "truncated pandas_categorical line"
    got = names.group(1).decode("utf-8", "replace").split()
    if got != expected:
        if sorted(got) == sorted(expected):
            return "features.json lists the model's features in a different order (columns would be fed to the wrong splits)"
        extra = sorted(set(expected) - set(got)) or sorted(set(got) - set(expected))
        return (f"its {len(got)} features differ from the {len(expected)} in features.json "
                f"(e.g. {extra[0] if extra else '?'})")
    return None


def booster_text(path: Path, expected: list[str], kb: str) -> str:
    """The validated text of one shipped LightGBM model (``Booster(model_str=...)``)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"model for KB '{kb}' lacks {path.name}; {_rebuild(kb)}") from None
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    problem = model_text_problem(raw, expected)
    if problem:
        raise ModelFileError(f"{path} is corrupt: {problem}; {_rebuild(kb)}")
    return raw.decode("utf-8")
