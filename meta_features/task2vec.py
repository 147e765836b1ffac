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
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from imagesets import ImageSet
from meta_features._common import image_digests
from meta_features._task2vec_distance import (
    ASYM_ALPHA,
    asymmetric_distance,
    cosine_distance,
    normalized_cosine_distance,
)
from meta_features._task2vec_probe import (
    Task2VecError,
    _inputs,
    _layer_params,
    _Net,
    _resolve_probe,
)

__all__ = [
    "ASYM_ALPHA", "MAX_PER_CLASS", "N_SAMPLES", "Task2VecEmbedding", "Task2VecError", "asymmetric_distance",
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
