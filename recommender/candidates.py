"""Any loadable model as a candidate: a KB checkpoint, torchvision or timm weights, a local
weight file, or ``scratch``, each with a card a person can act on.

`recommend --explain SOURCE` prints the card; `verify` fine-tunes the candidate. A card says
what the model is (architecture, input size, parameter count), where its weights are (an
absolute path or a hub name) and three lines that load it, so a recommendation ends in code
the user can paste. Hub weights are read from the local cache; when they are not there and
the hub cannot be reached, the one-line error says so and how to fetch them.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from experiments import KnowledgeBase
from experiments.cells import SCRATCH, checkpoint_file
from imagesets import UserError, atomic_write_text

__all__ = ["Candidate", "CandidateError", "resolve_candidate", "materialise", "HUB_PREFIXES"]

HUB_PREFIXES = ("torchvision:", "timm:")
_FC_HEADS = ("resnet", "resnext", "wide_resnet", "regnet", "googlenet", "inception", "shufflenet")  # head = .fc


class CandidateError(UserError):
    """A candidate that cannot be found, loaded or fine-tuned."""


@dataclass
class Candidate:
    """One model `verify` can fine-tune, and its card."""

    spec: str  # what the user wrote
    kind: str  # kb | torchvision | timm | file | scratch | public (a KB source with no shipped weights)
    name: str  # the source name its cells carry (content-hashed for files and hub weights)
    arch: str
    input_size: int | None  # px the weights were trained at
    in_chans: int
    n_params: int | None
    weights: str  # absolute path, hub name, or where to get them
    snippet: list[str] = field(default_factory=list)  # three lines that load the model
    num_classes: int | None = None
    pretrain_hash: str | None = None  # KB checkpoints: the pretraining settings they were made with
    notes: list[str] = field(default_factory=list)

    @property
    def external(self) -> bool:
        """Weights not made by a catscans protocol (fine-tuned from a materialised copy)."""
        return self.kind in ("torchvision", "timm", "file")

    def card(self) -> dict:
        return asdict(self)


def _n_params(arch: str, num_classes: int, in_chans: int) -> int | None:
    from experiments.models import ModelError, count_params, create_model

    try:
        return count_params(create_model(arch, max(1, num_classes), in_chans))
    except (ModelError, ImportError):
        return None


def _kb_candidate(kb: KnowledgeBase, source: str) -> Candidate:
    ck = kb.checkpoint_path(source)
    if ck is None:
        from recommender.explain import weights_location

        arch = str(kb.manifest.get("architecture", "?"))
        return Candidate(source, "public", source, arch, None, 3, None, weights_location(source, None),
                         ["# no weights shipped with this KB:", f"# {weights_location(source, None)}",
                          "# then fine-tune with your own training loop"],
                         notes=[f"KB '{kb.name}' ships no checkpoint for '{source}'; verify cannot fine-tune it"])
    meta = json.loads(ck.with_suffix(".json").read_text()) if ck.with_suffix(".json").exists() else {}
    arch, nc, ch = str(meta.get("arch", "?")), int(meta.get("num_classes", 2)), int(meta.get("in_chans", 3))
    path = str(ck.resolve())
    return Candidate(source, "kb", source, arch, meta.get("side"), ch, _n_params(arch, nc, ch), path,
                     _sidecar_snippet(path, arch, meta.get("side")), nc, meta.get("pretrain_hash"),
                     [f"pretrained on '{source}' by catscans ({meta.get('protocol', '?')} protocol)"])


def _sidecar_snippet(path: str, arch: str, side: object) -> list[str]:
    return ["from experiments.models import load_checkpoint, replace_head",
            f"model, meta = load_checkpoint({path!r})  # {arch}, {side or '?'} px input",
            "model = replace_head(model, n_classes)  # a fresh head for your classes"]


def _scratch(kb: KnowledgeBase | None) -> Candidate:
    proto = (kb.manifest.get("protocol") or {}) if kb is not None else {}
    arch, side, ch = str(proto.get("arch", "resnet-mini")), proto.get("side", 28), int(proto.get("channels", 3))
    return Candidate(SCRATCH, "scratch", SCRATCH, arch, side, ch, _n_params(arch, 2, ch),
                     "random initialisation (no pretraining)",
                     ["from experiments.models import create_model",
                      f"model = create_model({arch!r}, n_classes, {ch})  # random init, {side} px input",
                      "# train every layer on your images: nothing is transferred"], 2)


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the host of ``url`` answers a TCP connect (no download)."""
    host = urlparse(url).hostname
    if not host:
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _torchvision_weights(name: str):  # noqa: ANN202 (torchvision WeightsEnum)
    import torchvision

    try:
        if "." in name:
            return torchvision.models.get_weight(name)
        return torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError) as exc:
        raise CandidateError(f"no torchvision weights '{name}' (e.g. torchvision:ResNet18_Weights.IMAGENET1K_V1 "
                             f"or torchvision:resnet18)") from exc


def _torchvision_builder(weights) -> str:  # noqa: ANN001
    from torchvision.models import get_model_weights, list_models

    for m in list_models():
        try:
            if get_model_weights(m) is type(weights):
                return m
        except (ValueError, KeyError):
            continue
    raise CandidateError(f"no torchvision model takes {weights}")


def _torch_cache_file(url: str) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _torchvision_candidate(spec: str) -> Candidate:
    w = _torchvision_weights(spec.split(":", 1)[1])
    full = f"{type(w).__name__}.{w.name}"
    builder = _torchvision_builder(w)
    crop = getattr(w.transforms(), "crop_size", None)
    size = int(crop[0]) if crop else None
    cached = _torch_cache_file(w.url)
    head = ("model.fc = torch.nn.Linear(model.fc.in_features, n_classes)  # a fresh head"
            if builder.startswith(_FC_HEADS) else "# then replace its classifier head for your n_classes")
    notes = [f"cached at {cached}" if cached.exists() else f"not in the local cache ({cached})"]
    return Candidate(spec, "torchvision", f"torchvision:{full}", builder, size, 3, w.meta.get("num_params"),
                     f"torchvision {full} ({w.url})",
                     ["import torch, torchvision",
                      f"model = torchvision.models.{builder}(weights={full!r})", head],
                     len(w.meta.get("categories") or []) or None, notes=notes)


def _timm_candidate(spec: str) -> Candidate:
    name = spec.split(":", 1)[1]
    try:
        import timm
    except ImportError as exc:
        raise CandidateError(f"'{spec}': timm is not installed (pip install timm; its weights then load "
                             "from the Hugging Face cache, or download when online)") from exc
    if name not in timm.list_models(pretrained=True):
        raise CandidateError(f"timm has no pretrained model '{name}' (see timm.list_models(pretrained=True))")
    cfg = timm.models.get_pretrained_cfg(name)
    size = (cfg.input_size[-1] if cfg is not None and getattr(cfg, "input_size", None) else None)
    return Candidate(spec, "timm", f"timm:{name}", name, size, 3, None, f"timm {name} (Hugging Face hub)",
                     ["import timm",
                      f"model = timm.create_model({name!r}, pretrained=True, num_classes=n_classes)",
                      "print(model.pretrained_cfg['input_size'], model.pretrained_cfg['mean'])  # its preprocessing"],
                     notes=["fine-tuning timm models in verify is not supported: experiments.models has no timm "
                            "architectures"])


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _file_candidate(path: Path, arch: str | None) -> Candidate:
    path = path.resolve()
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    arch = arch or meta.get("arch")
    if not arch:
        raise CandidateError(f"{path}: no JSON sidecar naming its architecture; pass --arch NAME "
                             f"(e.g. resnet-mini, resnet18)")
    state = _read_state(path)
    nc, ch = _head_shape(state, meta)
    name = f"file:{path.stem}@{_sha(path)[:12]}"
    snippet = (_sidecar_snippet(str(path), arch, meta.get("side")) if meta.get("arch") == arch else
               ["from experiments.models import create_model, replace_head; from safetensors.torch import load_file",
                f"model = create_model({arch!r}, {nc}, {ch}); model.load_state_dict(load_file({str(path)!r}))",
                "model = replace_head(model, n_classes)  # a fresh head for your classes"])
    return Candidate(str(path), "file", name, arch, meta.get("side"), ch, _n_params(arch, nc, ch), str(path),
                     snippet, nc, notes=["a local weight file (content hash in its name)"])


def _read_state(path: Path) -> dict:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        if path.suffix in (".pt", ".pth"):
            import torch

            obj = torch.load(path, map_location="cpu", weights_only=True)
            return obj.get("state_dict", obj) if isinstance(obj, dict) else {}
    except Exception as exc:  # unreadable file: one line
        raise CandidateError(f"cannot read weights {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    raise CandidateError(f"{path}: unsupported weight file (use .safetensors, or .pt/.pth read with weights_only)")


def _head_shape(state: dict, meta: dict) -> tuple[int, int]:
    """(classes, input channels) from the sidecar, else from the head and the stem's conv weights
    (3 when the stem is not a known name)."""
    nc = meta.get("num_classes") or next((int(v.shape[0]) for k, v in state.items()
                                         if k.endswith(("head.weight", "fc.weight"))), 2)
    first = [k for k in ("stem.0.weight", "conv1.weight", "body.conv1.weight", "features.0.0.weight") if k in state]
    ch = meta.get("in_chans") or (int(state[first[0]].shape[1]) if first else 3)
    return int(nc), int(ch)


def resolve_candidate(spec: str, kb: KnowledgeBase | None = None, arch: str | None = None) -> Candidate:
    """The candidate ``spec`` names: ``scratch``, ``torchvision:W``, ``timm:M``, a KB source, or a file."""
    spec = spec.strip()
    if spec == SCRATCH:
        return _scratch(kb)
    if spec.startswith("torchvision:"):
        return _torchvision_candidate(spec)
    if spec.startswith("timm:"):
        return _timm_candidate(spec)
    if kb is not None and spec in kb.sources:
        return _kb_candidate(kb, spec)
    p = Path(spec).expanduser()
    if p.is_file():
        return _file_candidate(p, arch)
    known = ", ".join(s for s in (kb.sources if kb is not None else []) if s != SCRATCH)
    raise CandidateError(f"unknown candidate '{spec}' (KB sources: {known or 'none'}; or scratch, "
                         "torchvision:WEIGHTS, timm:MODEL, a weight file with --arch)")


def materialise(c: Candidate, folder: str | os.PathLike) -> Path:
    """Write an external candidate as ``<folder>/<name>.safetensors`` with an ``external`` sidecar,
    the form `experiments` fine-tunes from. Returns the checkpoint path."""
    from experiments.models import ModelError, create_model, save_checkpoint

    out = checkpoint_file(folder, c.name)
    if out.exists() and out.with_suffix(".json").exists():
        return out
    if c.kind == "timm":
        raise CandidateError(f"'{c.spec}': {c.notes[-1]}")
    try:
        model = create_model(c.arch, int(c.num_classes or 2), c.in_chans)
    except ModelError as exc:
        raise CandidateError(f"'{c.spec}': verify cannot fine-tune architecture '{c.arch}' ({exc})") from exc
    state = _torchvision_state(c) if c.kind == "torchvision" else _read_state(Path(c.weights))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CandidateError(f"'{c.spec}': weights do not fit {c.arch}: {str(exc).splitlines()[0]}") from exc
    save_checkpoint(model, out, {"arch": c.arch, "num_classes": int(c.num_classes or 2), "in_chans": c.in_chans,
                                 "source": c.name, "external": True, "origin": c.weights, "side": c.input_size})
    atomic_write_text(out.with_suffix(".card.json"), json.dumps(c.card(), indent=2) + "\n")
    return out


def _torchvision_state(c: Candidate) -> dict:
    """The cached torchvision state dict, renamed for experiments' wrapper (``fc`` → ``head``)."""
    import torch

    w = _torchvision_weights(c.spec.split(":", 1)[1])
    cached = _torch_cache_file(w.url)
    if not cached.exists():
        if not _reachable(w.url):
            raise CandidateError(
                f"'{c.spec}': weights not in the local cache ({cached}) and {urlparse(w.url).hostname} cannot be "
                f"reached (offline); fetch them on a networked machine with python -c \"import torchvision; "
                f"torchvision.models.get_weight('{type(w).__name__}.{w.name}').get_state_dict()\" and copy "
                f"{cached.name} into {cached.parent}")
        torch.hub.load_state_dict_from_url(w.url, progress=False)
    state = torch.load(cached, map_location="cpu", weights_only=True)
    return {(f"head.{k[3:]}" if k.startswith("fc.") else f"body.{k}"): v for k, v in state.items()}
