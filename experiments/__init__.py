"""experiments: transfer matrices (pretrain, fine-tune, evaluate), results store, backends, KB format.

The model API (torch) is imported lazily, so reading a KB or starting the CLI does not
pay torch's import time.
"""

from __future__ import annotations

import importlib
from typing import Any

from experiments.arithmetic import pin_cpu_kernels

pin_cpu_kernels()  # before anything imports torch: a cell's kernels never depend on the CPU model

from experiments.knowledge_base import (  # noqa: E402
    KnowledgeBase,
    KnowledgeBaseError,
    artifacts_dir,
    kb_root,
    list_kbs,
    load_kb,
    save_kb,
)

_LAZY = {
    name: "experiments.models"
    for name in ("ModelError", "create_model", "list_models", "load_checkpoint", "register_model",
                 "save_checkpoint")
}

__all__ = [
    "KnowledgeBase", "KnowledgeBaseError", "artifacts_dir", "kb_root", "list_kbs", "load_kb", "save_kb",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'experiments' has no attribute {name!r}")
