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
from experiments.models import (
    ModelError,
    create_model,
    list_models,
    load_checkpoint,
    register_model,
    save_checkpoint,
)

__all__ = [
    "KnowledgeBase", "KnowledgeBaseError", "artifacts_dir", "kb_root", "list_kbs", "load_kb", "save_kb",
    "ModelError", "create_model", "list_models", "load_checkpoint", "register_model", "save_checkpoint",
]
