"""experiments: transfer matrices (pretrain, fine-tune, evaluate), results store, backends, KB format."""

from experiments.knowledge_base import (
    KnowledgeBase,
    KnowledgeBaseError,
    artifacts_dir,
    kb_root,
    list_kbs,
    load_kb,
    save_kb,
)

__all__ = [
    "KnowledgeBase", "KnowledgeBaseError", "artifacts_dir", "kb_root", "list_kbs", "load_kb", "save_kb",
]
