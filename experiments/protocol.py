"""Protocols: TOML files loaded into frozen dataclasses, with a stable hash.

A protocol fixes everything that decides a cell's number (architecture, size,
training schedule, sampling); the hash of those fields is part of every result's
key, so changing one setting never mixes old and new results. Which sources and
targets are run is *not* hashed: adding a source must not invalidate the others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from imagesets import UserError

__all__ = ["ProtocolError", "TrainConfig", "EvalConfig", "Protocol", "load_protocol",
           "list_protocols", "protocols_dir"]

_HASH_EXCLUDE = {"name", "description", "sources", "targets", "twins"}


class ProtocolError(UserError):
    """A protocol that cannot be found, parsed or overridden."""


@dataclass(frozen=True)
class TrainConfig:
    """One training stage (source pretraining or target fine-tuning)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adamw"  # adam | adamw | sgd
    patience: int = 0  # early stopping on validation AUC; 0 = keep the last epoch
    augment: bool = True
    class_weights: str = "none"  # none | balanced
    max_images: int = 0  # stratified cap on training images; 0 = all
    drop: float = 0.0  # dropout before the head


@dataclass(frozen=True)
class EvalConfig:
    """How a target is sampled into train / validation / test for each fold or seed."""

    mode: str = "seeds"  # seeds | folds
    repeats: int = 3
    n_train: int = 0
    n_per_class: int = 0
    n_val: int = 0
    n_test: int = 0
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str = ""
    arch: str = "resnet-mini"
    side: int = 28
    channels: int = 3
    seed: int = 0
    scratch: bool = True
    include_self: bool = False
    sources: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    twins: tuple[tuple[str, str], ...] = ()
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    pretrain: TrainConfig = field(default_factory=TrainConfig)
    finetune: TrainConfig = field(default_factory=TrainConfig)

    @property
    def hash(self) -> str:
        """sha256 (first 16 hex) of the result-deciding fields, canonical JSON."""
        d = {k: v for k, v in self.to_dict().items() if k not in _HASH_EXCLUDE}
        if self.evaluation.mode == "seeds":  # seed i is the same cell whatever the seed count
            d["evaluation"].pop("repeats")
        return _digest(d)

    @property
    def pretrain_hash(self) -> str:
        """Hash of what decides a source checkpoint, and nothing else.

        A source's pretraining depends only on the source and these settings (architecture,
        input size, channels, seed, the split fractions that carve its validation/test rows,
        and the pretrain stage), never on targets, evaluation mode or fine-tuning, so every
        protocol and ``verify`` that agree on them reuse one checkpoint.
        """
        d = self.to_dict()
        return _digest({k: d[k] for k in ("arch", "side", "channels", "seed")}
                       | {"split": d["evaluation"]["split"], "pretrain": d["pretrain"]})

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def replace(self, **kw: Any) -> Protocol:
        return dataclasses.replace(self, **kw)


def _digest(d: dict) -> str:
    """sha256 (first 16 hex) of canonical JSON."""
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def protocols_dir() -> Path:
    return Path(__file__).resolve().parent / "protocols"


def list_protocols() -> list[str]:
    return sorted(p.stem for p in protocols_dir().glob("*.toml"))


def _resolve(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" and p.is_file():
        return p
    cand = protocols_dir() / f"{name_or_path}.toml"
    if cand.is_file():
        return cand
    raise ProtocolError(f"no protocol '{name_or_path}' (known: {', '.join(list_protocols())}, or a .toml path)")


def _parse_value(raw: str) -> Any:
    """A --set value: TOML literal when it parses (numbers, bools, arrays), else a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if "," in raw:
            return [s.strip() for s in raw.split(",") if s.strip()]
        return raw


def _apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        if "=" not in item:
            raise ProtocolError(f"--set needs key=value, got '{item}'")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ProtocolError(f"--set: unknown section '{part}' in '{key}'")
            node = node[part]
        if parts[-1] not in node:
            raise ProtocolError(f"--set: unknown protocol key '{key.strip()}'")
        value = _parse_value(raw.strip())
        if isinstance(node[parts[-1]], list) and isinstance(value, str):
            value = [value]
        node[parts[-1]] = value
    return data


def _defaults() -> dict:
    return json.loads(json.dumps(dataclasses.asdict(Protocol(name="defaults"))))


def _check_types(base: dict, defaults: dict, origin: str, prefix: str = "") -> None:
    """Each value must have its default's type (ints may stand for floats), so that
    ``--set pretrain.epochs=abc`` fails here in one line, not an hour into a run."""
    for key, default in defaults.items():
        value, name = base.get(key), f"{prefix}{key}"
        if isinstance(default, dict):
            _check_types(value, default, origin, f"{name}.")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ProtocolError(f"{origin}: '{name}' must be true or false, not {value!r}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ProtocolError(f"{origin}: '{name}' must be a whole number, not {value!r}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
                    or value in (float("inf"), float("-inf")):
                raise ProtocolError(f"{origin}: '{name}' must be a finite number, not {value!r}")
        elif isinstance(default, str) and not isinstance(value, str):
            raise ProtocolError(f"{origin}: '{name}' must be a string, not {value!r}")
        elif isinstance(default, list) and not isinstance(value, (list, tuple)):
            raise ProtocolError(f"{origin}: '{name}' must be a list, not {value!r}")


def _build(data: dict, origin: str) -> Protocol:
    base = _defaults()
    for key, value in data.items():
        if key not in base:
            raise ProtocolError(f"{origin}: unknown key '{key}'")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ProtocolError(f"{origin}: '{key}' must be a table")
            unknown = set(value) - set(base[key])
            if unknown:
                raise ProtocolError(f"{origin}: unknown key(s) {sorted(unknown)} in [{key}]")
            base[key].update(value)
        else:
            base[key] = value
    _check_types(base, _defaults(), origin)
    try:
        ev = base["evaluation"]
        ev["split"] = tuple(float(x) for x in ev["split"])
        proto = Protocol(
            **{k: v for k, v in base.items() if k not in ("evaluation", "pretrain", "finetune",
                                                           "sources", "targets", "twins")},
            sources=tuple(str(s) for s in base["sources"]),
            targets=tuple(str(t) for t in base["targets"]),
            twins=tuple(tuple(map(str, t)) for t in base["twins"]),  # type: ignore[misc]
            evaluation=EvalConfig(**ev),
            pretrain=TrainConfig(**base["pretrain"]),
            finetune=TrainConfig(**base["finetune"]),
        )
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"{origin}: {exc}") from exc
    _validate(proto, origin)
    return proto


def _validate(p: Protocol, origin: str) -> None:
    ev = p.evaluation
    problems = []
    if ev.mode not in ("seeds", "folds"):
        problems.append(f"evaluation.mode must be seeds or folds, not '{ev.mode}'")
    if ev.repeats < 1 or (ev.mode == "folds" and ev.repeats < 2):
        problems.append("evaluation.repeats must be >= 1 (>= 2 for folds)")
    if len(ev.split) != 3 or abs(sum(ev.split) - 1) > 1e-6 or min(ev.split) <= 0:
        problems.append("evaluation.split must be three positive fractions summing to 1")
    if p.side < 8 or p.channels not in (1, 3):
        problems.append("side must be >= 8 and channels 1 or 3")
    for stage in ("pretrain", "finetune"):
        c: TrainConfig = getattr(p, stage)
        if c.optimizer not in ("adam", "adamw", "sgd"):
            problems.append(f"{stage}.optimizer must be adam, adamw or sgd")
        if c.class_weights not in ("none", "balanced"):
            problems.append(f"{stage}.class_weights must be none or balanced")
        if c.epochs < 1 or c.batch_size < 1 or c.lr <= 0:
            problems.append(f"{stage}: epochs, batch_size and lr must be positive")
    if problems:
        raise ProtocolError(f"{origin}: " + "; ".join(problems))


def load_protocol(name_or_path: str, overrides: list[str] | None = None) -> Protocol:
    """Load a preset by name or a ``.toml`` path, then apply ``key=value`` overrides (dotted keys)."""
    path = _resolve(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(f"cannot parse protocol {path}: {exc}") from exc
    data.setdefault("name", path.stem)
    if overrides:
        merged = _defaults()
        for k, v in data.items():
            if isinstance(v, dict) and isinstance(merged.get(k), dict):
                merged[k].update(v)
            else:
                merged[k] = v
        data = _apply_overrides(merged, overrides)
    return _build(data, str(path))
