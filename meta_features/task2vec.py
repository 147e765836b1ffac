"""Task2Vec dataset embeddings (Achille et al. 2019), computed here, and their distances.

What it is: a fixed probe network's feature extractor is frozen, a linear head is fitted on the
labelled target, and the embedding is the diagonal of the Fisher information of the extractor's
weights, ``F = E_x E_{y ~ p(y|x)} [ (d log p(y|x) / d w)^2 ]``, averaged within each filter.

How the seed study configured it (``../shared/docs/seed_study.md`` §4.1) and what we keep:

- **Layers**: every weighted layer of the extractor, the classifier excluded, one value per
  filter (the squared gradient averaged over a filter's weights; BatchNorm scales count one per
  channel). For the study's ResNet-50 that is 53,120 values; for our default probe (3 conv + 3 BN
  + the 64x64 ``embed`` linear) it is 288. ``layers=[...module names...]`` restricts it.
- **Head fit**: the study fitted a fresh head with Adam (lr 4e-4, wd 1e-4) for 10 epochs in
  batches of 100 on ~100 images, i.e. ~10 steps, which leaves it nearly unfit. We fit the head
  to convergence instead: multinomial logistic regression on the cached frozen features
  (standardised, then folded back into the head), L2 ``head_l2`` = 1e-2, full-batch L-BFGS.
  The problem is strictly convex, so the head is unique: no init or batch-order noise (a seeded
  10-epoch Adam fit moved a binary set's embedding by cosine 0.06 between seeds, 0.33 on the
  normalised cosine; the converged fit by 0).
- **Fisher**: Monte Carlo, labels sampled from the model's own predictive distribution (the
  true Fisher, not the empirical one with dataset labels), ``n_samples`` per image (the study:
  1 epoch = 1 sample per image). The AWS task2vec code the study vendored squares the gradient
  of the *batch-mean* loss (batch 100): ``(1/B sum_i g_i)^2`` is not ``1/B sum_i g_i^2`` (it
  loses a factor ~B and mixes cross terms). We use **per-sample gradients** from ``torch.func``
  (``functional_call`` + ``vmap``), each squared before it is averaged: with K <= n_samples
  classes all K class gradients of an image come from one forward pass (``vmap(jacrev)``) and
  the drawn labels weight them; otherwise one ``vmap(grad)`` per (image, drawn label) pair.
  Same draws, same estimate, only the cost differs (a test checks the two agree).
  ``exact=True`` replaces sampling with the exact expectation over classes (the K gradients
  weighted by p(k|x)); the default ``exact=None`` uses it when K <= ``n_samples``, where it
  costs no more than sampling and removes the sampling noise, which is heavy-tailed (a rare
  label drawn for an image brings a large squared gradient). Averages are over images, then
  over samples; chunk sums are float32, the running totals float64.
- **BatchNorm** runs in eval mode (running statistics), so samples do not interact.
- **Subsets**: the study drew 100 subsets of 1% per dataset (e.g. ~10 images for Kimia) with a
  class-size-*weighted* sampler, and found a same-dataset noise floor as large as many
  between-dataset distances. We take one seeded subset with at most ``max_per_class`` images of
  each class (so every class is represented and large sets stay cheap), chosen in content order
  so file order does not matter.
- **Distances**: the study used plain cosine on the raw Fisher (``cosine_distance``); the
  task2vec library recommends the cosine of h_a/(h_a+h_b) vs h_b/(h_a+h_b)
  (``normalized_cosine_distance``); the paper's asymmetric source -> target distance is
  ``asymmetric_distance``. ``scale`` is None: the library's Monte-Carlo path sets it to ones,
  so no distance here uses it.
- **Trivial embedding** t0 (for the asymmetric distance): the same probe on the *source's*
  images with seeded shuffled labels (``trivial_embedding``): same images, same class balance,
  no image-label relation. ``d_sym(source, t0)`` then measures how much label structure the
  source task has, and the paper's ``- alpha * d_sym(source, t0)`` brings more complex
  sources closer.

Deterministic: the same data (in any order), seed and options give a bit-identical vector
(for the same ``threads``, default 1). Probes: ``None``/``"default"`` = the project's shipped
probe (28 px grey), an ``experiments.models`` architecture name (built by ``create_model``; random
init seeded by ``seed`` unless ``pretrained=True``), a checkpoint path (``load_checkpoint``;
side, channels and input normalisation from its sidecar), or any ``nn.Module`` with
``forward_features(x) -> (n, d)`` and an ``nn.Linear`` ``head``.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from scipy.spatial import distance as _sdist
from torch import nn
from torch.nn import functional as F

from imagesets import ImageSet
from meta_features._common import (
    PROFILE_SIDE,
    MetaFeatureError,
    grey_of,
    image_digests,
    resize_images,
)

__all__ = [
    "MAX_PER_CLASS", "N_SAMPLES", "Task2VecEmbedding", "Task2VecError", "asymmetric_distance",
    "cosine_distance", "head_features", "normalized_cosine_distance", "task2vec_embedding",
    "trivial_embedding",
]

MAX_PER_CLASS = 250
"""Default cap on images per class (seeded, content-ordered choice)."""
N_SAMPLES = 8
"""Default Monte-Carlo label samples per image (with K <= N_SAMPLES classes the exact
expectation is used instead: it costs no more and has no sampling noise)."""
BATCH = 64
"""Default (image, label) pairs per vmap chunk (lowered automatically for large probes)."""
HEAD_L2 = 1e-2
"""L2 on the (standardised-feature) head weights: keeps a separable set's head finite."""
HEAD_MAX_ITER = 500
THREADS = 1
"""torch threads for one embedding. One, not two: these are many small per-sample kernels, and
on the shared 2-core machine (load 2-3) one thread gave a steady 230-250 images/s while two
gave anything from 50 to 440 (``benchmarks/task2vec_speed.py``): when the other core is busy
the second thread mostly spin-waits."""
_GRAD_BUDGET = 2**24  # floats of per-sample gradients held at once (64 MB)
_NPZ_PREFIX = "task2vec_"
_FORCE_PATH: str | None = None  # tests only: "jac" or "pairs" (the two give the same estimate)
ASYM_ALPHA = 0.15


class Task2VecError(MetaFeatureError):
    """A set or option Task2Vec cannot work with (one-line message)."""


@dataclass
class Task2VecEmbedding:
    """One dataset's Task2Vec embedding: the filter-wise diagonal Fisher of the probe."""

    hessian: np.ndarray  # float32 (sum(layer_sizes),)
    scale: np.ndarray | None
    layers: list[str]  # module names, in order
    n_images: int
    seed: int
    probe_name: str
    cost_s: float
    layer_sizes: list[int] = field(default_factory=list)
    info: dict = field(default_factory=dict)  # n_samples, exact, caps, head accuracy, classes ...

    def __post_init__(self) -> None:
        self.hessian = np.asarray(self.hessian, dtype=np.float32)
        if self.scale is not None:
            self.scale = np.asarray(self.scale, dtype=np.float32)
        if not self.layer_sizes:
            self.layer_sizes = [int(self.hessian.size)]

    def by_layer(self) -> dict[str, np.ndarray]:
        """layer name -> its slice of ``hessian``."""
        out, i = {}, 0
        for name, k in zip(self.layers, self.layer_sizes, strict=True):
            out[name] = self.hessian[i : i + k]
            i += k
        return out

    def to_npz_dict(self, prefix: str = _NPZ_PREFIX) -> dict[str, np.ndarray]:
        """float32 arrays plus one small JSON string (``np.savez`` without pickle)."""
        meta = {"layers": self.layers, "layer_sizes": [int(k) for k in self.layer_sizes],
                "n_images": int(self.n_images), "seed": int(self.seed), "probe_name": self.probe_name,
                "cost_s": float(self.cost_s), "info": self.info, "has_scale": self.scale is not None}
        out = {f"{prefix}hessian": self.hessian.astype(np.float32),
               f"{prefix}meta": np.array(json.dumps(meta, sort_keys=True, default=_json_default))}
        if self.scale is not None:
            out[f"{prefix}scale"] = self.scale.astype(np.float32)
        return out

    @classmethod
    def from_npz_dict(cls, d, prefix: str = _NPZ_PREFIX) -> Task2VecEmbedding:
        """Inverse of :meth:`to_npz_dict` (accepts a dict or an opened ``np.load`` file)."""
        key = f"{prefix}meta"
        if key not in d:
            raise Task2VecError(f"no Task2Vec embedding stored (missing '{key}')")
        meta = json.loads(str(np.asarray(d[key])[()]))
        scale = np.asarray(d[f"{prefix}scale"], np.float32) if meta.get("has_scale") else None
        return cls(hessian=np.asarray(d[f"{prefix}hessian"], np.float32), scale=scale,
                   layers=list(meta["layers"]), n_images=int(meta["n_images"]), seed=int(meta["seed"]),
                   probe_name=str(meta["probe_name"]), cost_s=float(meta["cost_s"]),
                   layer_sizes=[int(k) for k in meta["layer_sizes"]], info=dict(meta.get("info", {})))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o).__name__)


# -- the probe and its input ---------------------------------------------------------------
@dataclass
class _Probe:
    model: nn.Module
    name: str
    relu_features: bool  # ProbeNet applies ReLU between its embedding and its head
    kind: str  # "probenet" | "model"
    side: int
    in_chans: int
    meta: dict


def _first_conv_in(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return 3


def _resolve_probe(probe, n_classes: int, seed: int, side: int | None, pretrained: bool) -> _Probe:
    from meta_features._probe import ProbeNet, load_probe

    if probe is None or (isinstance(probe, str) and probe == "default"):
        return _Probe(load_probe("default"), "default", True, "probenet", PROFILE_SIDE, 1, {})
    if isinstance(probe, nn.Module):
        if isinstance(probe, ProbeNet):
            return _Probe(probe, "ProbeNet", True, "probenet", PROFILE_SIDE, 1, {})
        _check_surface(probe, type(probe).__name__)
        name = str(getattr(probe, "arch", type(probe).__name__))
        return _Probe(probe, name, False, "model", int(side or PROFILE_SIDE), _first_conv_in(probe), {})
    if isinstance(probe, (str, Path)):
        p = Path(probe)
        if p.suffix in (".safetensors", ".pt", ".pth") and p.exists():
            from meta_features._checkpoint_features import load_source

            model, meta = load_source(p)
            _check_surface(model, str(p))
            return _Probe(model, f"{meta.get('arch', 'checkpoint')}:{p.name}", False, "model",
                          int(side or meta.get("side") or PROFILE_SIDE),
                          int(meta.get("in_chans", _first_conv_in(model))), meta)
        from experiments.models import create_model, list_models

        if str(probe) not in list_models():
            raise Task2VecError(f"unknown Task2Vec probe '{probe}' (use 'default', a checkpoint path or "
                                f"one of: {', '.join(list_models())})")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_model(str(probe), max(n_classes, 1), in_chans=3, pretrained=pretrained)
        return _Probe(model, str(probe) + (":pretrained" if pretrained else f":init{seed}"), False,
                      "model", int(side or PROFILE_SIDE), 3, {})
    raise Task2VecError(f"probe must be None, a name, a checkpoint path or an nn.Module, got {type(probe).__name__}")


def _check_surface(model: nn.Module, what: str) -> None:
    if not hasattr(model, "forward_features") or not isinstance(getattr(model, "head", None), nn.Linear):
        raise Task2VecError(f"probe {what} needs forward_features(x) and an nn.Linear head")


def _inputs(images: np.ndarray, pr: _Probe) -> torch.Tensor:
    """uint8 N x H x W x C -> the float NCHW tensor the probe was trained on."""
    if pr.kind == "probenet":
        from meta_features._probe import to_tensor

        return to_tensor(grey_of(resize_images(images, PROFILE_SIDE)))
    from meta_features._checkpoint_features import conform_images, normalise

    x = conform_images(images, pr.side, pr.in_chans)
    return normalise(torch.from_numpy(np.ascontiguousarray(x)), pr.meta).contiguous()


class _Net(nn.Module):
    """body.forward_features -> (ReLU) -> head; holds the probe by reference, never mutates it."""

    def __init__(self, body: nn.Module, head: nn.Linear, relu: bool) -> None:
        super().__init__()
        self.body, self.head, self.relu = body, head, relu

    def features(self, x: torch.Tensor) -> torch.Tensor:
        z = self.body.forward_features(x)
        return F.relu(z) if self.relu else z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _layer_params(body: nn.Module, layers: str | Sequence[str]) -> list[tuple[str, str, int]]:
    """(module name, parameter name in _Net, n filters) for the chosen weighted layers."""
    head = getattr(body, "head", None)
    skip = set()
    if isinstance(head, nn.Module):
        skip = {id(m) for m in head.modules()}
    found = []
    for name, m in body.named_modules():
        if id(m) in skip:
            continue
        w = getattr(m, "weight", None)
        if isinstance(w, nn.Parameter) and isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear,
                                                          nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm,
                                                          nn.LayerNorm)):
            found.append((name, f"body.{name}.weight" if name else "body.weight", int(w.shape[0])))
    if isinstance(layers, str):
        if layers != "all":
            raise Task2VecError(f"layers must be 'all' or a list of module names, got {layers!r}")
        if not found:
            raise Task2VecError("the probe has no weighted layer outside its head")
        return found
    want = list(layers)
    known = {t[0] for t in found}
    bad = [n for n in want if n not in known]
    if bad or not want:
        raise Task2VecError(f"unknown probe layer(s) {bad or want} (weighted layers: {', '.join(n for n, *_ in found)})")
    return [t for t in found if t[0] in set(want)]


# -- data -----------------------------------------------------------------------------------
def _as_arrays(data) -> tuple[str, np.ndarray, np.ndarray | None, ImageSet | None]:
    if isinstance(data, ImageSet):
        return data.name, data.images, data.labels, data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = data
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise Task2VecError(f"images must be uint8 N x H x W x C (C = 1 or 3), got {images.dtype} {images.shape}")
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (len(images),):
                raise Task2VecError(f"labels must have shape ({len(images)},), got {labels.shape}")
        return "arrays", images, labels, None
    raise Task2VecError(f"expected an ImageSet or (images, labels), got {type(data).__name__}")


def _select(name: str, images: np.ndarray, labels: np.ndarray | None, max_per_class: int | None,
            seed: int) -> np.ndarray:
    """Rows used: content order (file order cannot matter), at most ``max_per_class`` per class."""
    if labels is None:
        raise Task2VecError(f"Task2Vec needs labels: '{name}' is unlabelled, and the embedding is the "
                            "Fisher of a classifier fitted on the labels (give class sub-folders or a CSV "
                            "with a label column).")
    if len(images) == 0:
        raise Task2VecError(f"Task2Vec: '{name}' has no images")
    view = SimpleNamespace(images=images, labels=labels)  # image_digests reads only these two
    order = np.argsort(np.asarray(image_digests(view)), kind="stable")
    classes = np.unique(labels)
    if len(classes) < 2:
        raise Task2VecError(f"Task2Vec needs at least two classes: '{name}' has {len(classes)}")
    rng = np.random.default_rng(seed)
    keep = []
    lab_ord = labels[order]
    for c in classes:
        rows = order[lab_ord == c]
        if max_per_class is not None and len(rows) > max_per_class:
            rows = rows[np.sort(rng.choice(len(rows), size=max_per_class, replace=False))]
        keep.append(rows)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    sel = np.concatenate(keep)
    return sel[np.argsort(rank[sel], kind="stable")]


# -- head fit and Fisher --------------------------------------------------------------------
@torch.no_grad()
def _features(net: _Net, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([net.features(x[i : i + batch]) for i in range(0, len(x), batch)])


def _fit_head(z: torch.Tensor, y: torch.Tensor, k: int, l2: float, max_iter: int) -> nn.Linear:
    """Multinomial logistic regression on standardised features, fitted to convergence
    (full-batch L-BFGS, L2 ``l2`` on the weights, bias free), folded back to raw features.

    The problem is strictly convex, so the head is the unique optimum: no init or batch-order
    noise (a 10-epoch Adam fit moved a binary set's embedding by cosine 0.06 between seeds)."""
    zs64 = z.double()
    mu, sd = zs64.mean(0), zs64.std(0, unbiased=False).clamp_min(1e-6)
    zs = (zs64 - mu) / sd
    d = z.shape[1]
    w = torch.zeros(k, d, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-9,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(zs @ w.T + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    head = nn.Linear(d, k)
    with torch.no_grad():
        head.weight.copy_((w / sd).float())
        head.bias.copy_((b - (w * (mu / sd)).sum(1)).float())
    return head


def _fisher(net: _Net, x: torch.Tensor, logits: torch.Tensor, chosen: list[tuple[str, str, int]],
            n_samples: int, exact: bool, seed: int, batch_size: int) -> np.ndarray:
    """Filter-wise diagonal Fisher from per-sample gradients (torch.func; see module docstring).

    Each image i contributes ``sum_k w_ik (d log p(k|x_i) / dw)^2`` with ``w_ik = p(k|x_i)``
    (exact) or the share of its ``n_samples`` labels drawn from p(.|x_i) that are k (Monte
    Carlo). When K <= n_samples (or exact) all K class gradients of an image come from one
    forward pass (``vmap(jacrev)``); otherwise one gradient per drawn label (``vmap(grad)``).
    Both give the same estimate for the same draws; only the cost differs.
    """
    from torch.func import functional_call, grad, jacrev, vmap

    n, k = logits.shape
    dev = x.device
    probs = torch.softmax(logits.double(), dim=1)
    if exact:
        lab = None
    else:
        g = torch.Generator().manual_seed(seed + 1)
        lab = torch.multinomial(probs, n_samples, replacement=True, generator=g)  # n x S

    params = {kk: v.detach() for kk, v in net.named_parameters()}
    buffers = {kk: v.detach() for kk, v in net.named_buffers()}
    names = [p for _, p, _ in chosen]
    fixed = {kk: v for kk, v in params.items() if kk not in set(names)}
    fixed.update(buffers)
    sub = {kk: params[kk] for kk in names}
    n_par = sum(v.numel() for v in sub.values())
    acc = {kk: torch.zeros_like(v, dtype=torch.float64) for kk, v in sub.items()}

    def log_probs(w: dict, xi: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(functional_call(net, {**fixed, **w}, (xi[None],)), dim=1)[0]

    path = _FORCE_PATH or ("jac" if exact or k <= n_samples else "pairs")
    if path == "jac":
        if exact:
            wts = probs
        else:
            wts = torch.zeros(n, k, dtype=torch.float64).scatter_add_(
                1, lab, torch.full(lab.shape, 1.0 / n_samples, dtype=torch.float64))
        wts = wts.to(dev)
        all_classes = vmap(jacrev(log_probs), in_dims=(None, 0))  # -> B x K x shape
        chunk = int(max(1, min(batch_size, _GRAD_BUDGET // max(n_par * k, 1))))
        for i in range(0, n, chunk):
            gs = all_classes(sub, x[i : i + chunk])
            w = wts[i : i + chunk].float()
            for kk in acc:
                acc[kk] += torch.tensordot(w, gs[kk].square_(), dims=2).double()  # f32 chunk, f64 total
    else:
        idx = torch.arange(n).repeat_interleave(n_samples).to(dev)
        lab_flat = lab.reshape(-1).to(dev)
        eye = torch.eye(k, dtype=x.dtype, device=dev)

        def loglik(w: dict, xi: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
            return (log_probs(w, xi) * onehot).sum()

        per_pair = vmap(grad(loglik), in_dims=(None, 0, 0))
        chunk = int(max(1, min(batch_size, _GRAD_BUDGET // max(n_par, 1))))
        for i in range(0, len(idx), chunk):
            gs = per_pair(sub, x[idx[i : i + chunk]], eye[lab_flat[i : i + chunk]])
            for kk in acc:
                acc[kk] += gs[kk].square_().sum(0).double() / n_samples
    out = []
    for _, p, nf in chosen:
        f = (acc[p] / n).reshape(nf, -1).mean(1)
        out.append(f.cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def task2vec_embedding(
    imageset_or_arrays,
    probe=None,
    *,
    max_per_class: int | None = MAX_PER_CLASS,
    n_samples: int = N_SAMPLES,
    seed: int = 0,
    batch_size: int = BATCH,
    device: str = "cpu",
    layers: str | Sequence[str] = "all",
    exact: bool | None = None,
    head: nn.Linear | None = None,
    head_l2: float = HEAD_L2,
    side: int | None = None,
    pretrained: bool = False,
    threads: int = THREADS,
) -> Task2VecEmbedding:
    """Task2Vec embedding of a labelled set (an ``ImageSet`` or ``(images, labels)``).

    ``probe``: None/"default" (the shipped probe), an ``experiments.models`` name, a checkpoint
    path, or an ``nn.Module`` with ``forward_features`` and an ``nn.Linear`` ``head``.
    ``head``: use this head as is (no fit; its outputs index the sorted distinct labels) —
    by default a fresh head is fitted to convergence (L2 ``head_l2``). ``exact``: True =
    the exact expectation over the K classes, False = ``n_samples`` Monte-Carlo labels per
    image, None (default) = exact when K <= ``n_samples`` (no dearer, no sampling noise).
    ``side``: input side for non-default probes (default: the checkpoint's, else 28 px).
    ``threads``: torch threads during the call (restored after; see ``THREADS``).
    Raises :class:`Task2VecError` (a ``UserError``) for an unlabelled set.
    """
    t0 = time.perf_counter()
    name, images, labels, _ = _as_arrays(imageset_or_arrays)
    if n_samples < 1 or batch_size < 1:
        raise Task2VecError("n_samples and batch_size must be >= 1")
    if max_per_class is not None and max_per_class < 1:
        raise Task2VecError("max_per_class must be >= 1 (or None for no cap)")
    rows = _select(name, images, labels, max_per_class, seed)
    classes, y = np.unique(np.asarray(labels)[rows], return_inverse=True)
    k = len(classes)
    if exact is None:  # the exact expectation costs K gradients per image, sampling n_samples
        exact = k <= n_samples
    pr = _resolve_probe(probe, k, seed, side, pretrained)
    dev = torch.device(device)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    was_training = pr.model.training
    pr.model.eval()
    try:
        x = _inputs(images[rows], pr).to(dev)
        yt = torch.from_numpy(y.astype(np.int64)).to(dev)
        body = pr.model if dev.type == "cpu" else copy.deepcopy(pr.model).to(dev).eval()
        net = _Net(body, nn.Linear(1, k), pr.relu_features)
        z = _features(net, x)
        if head is None:
            fitted = _fit_head(z.cpu(), yt.cpu(), k, head_l2, HEAD_MAX_ITER)
        else:
            if not isinstance(head, nn.Linear) or head.out_features != k or head.in_features != z.shape[1]:
                raise Task2VecError(f"head must be nn.Linear({z.shape[1]}, {k}) for this set")
            fitted = copy.deepcopy(head)  # the caller's head is not moved or switched to eval
        net.head = fitted.to(dev).eval()
        with torch.no_grad():
            logits = net.head(z)
        acc = float((logits.argmax(1) == yt).float().mean())
        chosen = _layer_params(body, layers)
        hess = _fisher(net, x, logits.cpu(), chosen, n_samples, exact, seed, batch_size)
    finally:
        pr.model.train(was_training)
        torch.set_num_threads(prev_threads)
    info = {"n_samples": int(n_samples), "exact": bool(exact), "max_per_class": max_per_class,
            "n_classes": int(k), "head_fitted": head is None, "head_train_accuracy": round(acc, 4),
            "head_l2": float(head_l2), "side": int(pr.side),
            "dataset": name, "method": "montecarlo-true-fisher/per-sample-vmap"}
    if pr.name == "default":
        from meta_features._probe import probe_digest

        info["probe_digest"] = probe_digest()
    return Task2VecEmbedding(hessian=hess, scale=None, layers=[c[0] for c in chosen], n_images=len(rows),
                             seed=int(seed), probe_name=pr.name, cost_s=time.perf_counter() - t0,
                             layer_sizes=[c[2] for c in chosen], info=info)


def head_features(imageset_or_arrays, probe=None, *, max_per_class: int | None = MAX_PER_CLASS,
                  seed: int = 0, side: int | None = None, pretrained: bool = False,
                  threads: int = THREADS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the Task2Vec head is fitted on: (features n x d float32, label index n, classes).

    Same rows, order and probe input as :func:`task2vec_embedding` with the same options; a
    caller can fit its own ``head`` on these (label index k = ``classes[k]``)."""
    name, images, labels, _ = _as_arrays(imageset_or_arrays)
    rows = _select(name, images, labels, max_per_class, seed)
    classes, y = np.unique(np.asarray(labels)[rows], return_inverse=True)
    pr = _resolve_probe(probe, len(classes), seed, side, pretrained)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    was_training = pr.model.training
    pr.model.eval()
    try:
        z = _features(_Net(pr.model, nn.Linear(1, len(classes)), pr.relu_features), _inputs(images[rows], pr))
    finally:
        pr.model.train(was_training)
        torch.set_num_threads(prev_threads)
    return z.numpy().astype(np.float32), y.astype(np.int64), classes


def trivial_embedding(imageset_or_arrays, probe=None, **kwargs) -> Task2VecEmbedding:
    """t0 for :func:`asymmetric_distance`: the same images with seeded shuffled labels.

    Same images and class balance as the task, no image-label relation left; takes the
    options of :func:`task2vec_embedding` (``seed`` also seeds the shuffle).
    """
    name, images, labels, _ = _as_arrays(imageset_or_arrays)
    if labels is None:
        _select(name, images, labels, None, 0)  # the one clear "needs labels" error
    seed = int(kwargs.get("seed", 0))
    shuffled = np.random.default_rng(10_007 + seed).permutation(np.asarray(labels))
    e = task2vec_embedding((images, shuffled), probe, **kwargs)
    e.info = {**e.info, "trivial": "shuffled labels", "dataset": name}
    return e


# -- distances ------------------------------------------------------------------------------
def _vec(e) -> np.ndarray:
    h = e.hessian if isinstance(e, Task2VecEmbedding) else e
    h = np.asarray(h, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(h)):
        raise Task2VecError("Task2Vec embedding has non-finite values")
    return h


def _sizes(e) -> list[int] | None:
    return list(e.layer_sizes) if isinstance(e, Task2VecEmbedding) else None


def _layerwise(h: np.ndarray, sizes: list[int] | None) -> np.ndarray:
    if not sizes:
        raise Task2VecError("layerwise=True needs Task2VecEmbedding inputs (layer sizes)")
    out, i = [], 0
    for k in sizes:
        block = h[i : i + k]
        m = block.mean()
        out.append(block / m if m > 0 else block)
        i += k
    return np.concatenate(out)


def _cos(u: np.ndarray, v: np.ndarray) -> float:
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    if nu == 0 and nv == 0:
        return 0.0
    if nu == 0 or nv == 0:
        return 1.0
    if np.array_equal(u, v):
        return 0.0
    return float(np.clip(_sdist.cosine(u, v), 0.0, 2.0))


def cosine_distance(a, b, *, layerwise: bool = False) -> float:
    """Plain cosine distance of the raw Fisher diagonals (the seed study's
    ``scipy.spatial.distance.cosine`` on ``hessian``). ``layerwise=True`` first divides each
    layer's block by its mean so no layer dominates by magnitude alone."""
    ha, hb = _vec(a), _vec(b)
    if ha.shape != hb.shape:
        raise Task2VecError(f"Task2Vec embeddings differ in size ({ha.size} vs {hb.size}): different probes?")
    if layerwise:
        ha, hb = _layerwise(ha, _sizes(a)), _layerwise(hb, _sizes(b))
    return _cos(ha, hb)


def normalized_cosine_distance(a, b) -> float:
    """The task2vec library's distance: cosine of h_a/(h_a+h_b) vs h_b/(h_a+h_b).

    Symmetric, 0 for identical inputs and for h_b = c * h_a, in [0, 1] (both vectors are
    non-negative). An entry where both Fishers are 0 (a dead filter) is left out, as the
    library's ``+ 1e-8`` does, without an epsilon that would swamp small Fisher values."""
    ha, hb = _vec(a), _vec(b)
    if ha.shape != hb.shape:
        raise Task2VecError(f"Task2Vec embeddings differ in size ({ha.size} vs {hb.size}): different probes?")
    s = ha + hb
    pos = s > 0
    ua = np.where(pos, ha / np.where(pos, s, 1.0), 0.0)
    ub = np.where(pos, hb / np.where(pos, s, 1.0), 0.0)
    return _cos(ua, ub)


def asymmetric_distance(source, target, trivial, alpha: float = ASYM_ALPHA) -> float:
    """The paper's d_asym(source -> target) = d_sym(source, target) - alpha * d_sym(source, t0).

    d_sym is :func:`normalized_cosine_distance`; ``trivial`` (t0) is the source's trivial
    embedding (:func:`trivial_embedding`: the source images with shuffled labels). Not
    symmetric; can be negative; lower = a better source for the target."""
    return normalized_cosine_distance(source, target) - alpha * normalized_cosine_distance(source, trivial)
