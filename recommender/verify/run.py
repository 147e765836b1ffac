"""`catscans verify`: measure a shortlist on the user's labelled images.

The KB's own protocol, checkpoints, training code, results store, claims and resume:
each fine-tune is an ``experiments.cells.run_cell`` cell run through a backend, stored in a
folder keyed by the target's content fingerprint and the protocol hash
(``runs/verify/<fingerprint12>-<hash8>/``), so a killed verify resumes where it stopped and
two verify processes on one folder compute each cell once. The cheaper rounds of successive
halving are the same protocol with fewer training images and epochs (their own protocol hash,
so they never mix with full runs); the last round is the KB protocol itself, whose cells are
the ones ``--save-to-kb`` may add to a KB.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from experiments import KnowledgeBase, load_kb
from experiments.cells import SCRATCH, Cell, RunContext, decode_predictions
from experiments.protocol import EvalConfig, Protocol, TrainConfig
from experiments.store import open_store
from imagesets import UserError
from recommender.candidates import Candidate, materialise, resolve_candidate
from recommender.verify.halving import FULL, Budget, Level, Round, successive_halving
from recommender.verify.pairing import PairedCell, check_paired
from recommender.verify.posterior import (
    DISPLACE,
    Picker,
    block_from_boot,
    prior_from_rows,
    seed_floor,
)
from recommender.verify.stats import BootResult, Measurement, compare, interval, paired_bootstrap
from recommender.verify.verdict import verdict

__all__ = ["VerifyError", "VerifyResult", "verify", "kb_protocol", "level_protocol", "parse_budget", "table_rows"]

Event = Callable[[dict], None]


class VerifyError(UserError):
    """A target, KB, candidate or budget verify cannot work with."""


@dataclass
class VerifyResult:
    target: str
    fingerprint: str
    kb: str
    protocol: str  # name@hash
    run_dir: str
    store: str
    rows: list[dict]
    rounds: list[dict]
    compute: dict
    verdict: str
    card: dict = field(default_factory=dict)  # the target's ImageSet card, as read at the protocol's size
    notes: list[str] = field(default_factory=list)
    posterior: dict = field(default_factory=dict)  # prediction x measurement: pick, tied set, rule (posterior.report)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def kb_protocol(kb: KnowledgeBase) -> Protocol:
    """The protocol a KB was measured with, rebuilt from its manifest and checked against its hash."""
    raw = kb.manifest.get("protocol")
    d = dict(raw) if isinstance(raw, dict) else {}
    if "evaluation" not in d:
        raise VerifyError(f"KB '{kb.name}' records no protocol: verify needs a KB made by build-matrix --export-kb")
    want = d.pop("hash", None)
    d.pop("pretrain_hash", None)
    try:
        ev = dict(d.pop("evaluation"))
        ev["split"] = tuple(float(x) for x in ev["split"])
        proto = Protocol(**{k: v for k, v in d.items() if k not in ("pretrain", "finetune", "sources", "targets",
                                                                       "twins")},
                         sources=tuple(d.get("sources", ())), targets=tuple(d.get("targets", ())),
                         twins=tuple(tuple(t) for t in d.get("twins", ())), evaluation=EvalConfig(**ev),
                         pretrain=TrainConfig(**d["pretrain"]), finetune=TrainConfig(**d["finetune"]))
    except (TypeError, KeyError, ValueError) as exc:
        raise VerifyError(f"KB '{kb.name}': its manifest protocol cannot be read ({exc})") from exc
    if want and proto.hash != want:
        raise VerifyError(f"KB '{kb.name}': its manifest protocol hashes to {proto.hash}, not the recorded {want} "
                          "(made by another catscans version?)")
    return proto


def level_protocol(proto: Protocol, level: Level, n_train_full: int) -> Protocol:
    """``proto`` with a share of the training images and epochs; the full level is ``proto`` itself."""
    if level.full:
        return proto
    ev, ft = proto.evaluation, proto.finetune
    ev = dataclasses.replace(ev, n_per_class=max(2, round(ev.n_per_class * level.data)) if ev.n_per_class else 0,
                             n_train=0 if ev.n_per_class else max(8, round(n_train_full * level.data)))
    epochs = max(2, round(ft.epochs * level.epochs))
    ft = dataclasses.replace(ft, epochs=epochs, patience=min(ft.patience, epochs) if ft.patience else 0)
    return proto.replace(name=f"{proto.name}~verify", evaluation=ev, finetune=ft)


def parse_budget(text: str | float | None) -> tuple[str, float]:
    """'0.25' / '25%' → ('fraction', 0.25); '10m' / '10min' → ('minutes', 10)."""
    if text is None:
        return "fraction", 0.25
    s = str(text).strip().lower()
    try:
        if s.endswith("%"):
            v, kind = float(s[:-1]) / 100, "fraction"
        elif s.endswith(("min", "m")):
            v, kind = float(s.rstrip("min").strip()), "minutes"
        else:
            v, kind = float(s), "fraction"
    except ValueError as exc:
        raise VerifyError(f"--budget '{text}': give a fraction of full compute (0.25, 25%) or minutes (10m)") from exc
    if not v > 0 or (kind == "fraction" and v > 1):
        raise VerifyError(f"--budget '{text}': a fraction must be in (0, 1], minutes > 0")
    return kind, v


def _target_spec(target: str) -> str:
    if target == "demo" and not Path(target).exists():  # the embedded demo target, as recommend builds it
        from imagesets import build_demo_target

        target = str(build_demo_target(Path.home() / ".cache" / "catscans" / "demo_target"))
    p = Path(target).expanduser()
    return str(p.resolve()) if p.exists() else target


def _shortlist(target: str, kb: KnowledgeBase, top: int | None) -> tuple[list[str], str, list[dict] | None]:
    """The first ``top`` (None: all) non-scratch sources of `recommend`, the method that ordered
    them and recommend's ranking rows (the prior; None when it did not run); the KB's static
    ranking when it has no trained meta-model."""
    from experiments.knowledge_base import KnowledgeBaseError, resolve_kb_path
    from recommender.model import column_z, models_dir
    from recommender.recommend import recommend

    name = kb.path.name if kb.path is not None else kb.name
    try:  # recommend knows KBs by name: use it only when the name is this very KB and has a model
        trained = resolve_kb_path(name).resolve() == Path(kb.path or "").resolve() and \
            (models_dir() / name / "manifest.json").exists()
    except KnowledgeBaseError:
        trained = False
    why = "the KB has no trained meta-model"
    if trained:
        try:
            rec = recommend(target, kb=name)
            return ([r["source"] for r in rec.ranking if r["source"] != SCRATCH][:top], f"recommend ({rec.method})",
                    rec.ranking)
        except UserError as exc:  # a stale or broken shipped model: say so, rank by the KB itself
            why = f"recommend failed: {str(exc).splitlines()[0]}"
    prior = column_z(kb.matrix()).mean(axis=1, skipna=True).dropna()
    order = list(prior.sort_values(ascending=False, kind="mergesort").index)
    names = [s for s in order if s != SCRATCH]
    return names[:top], f"the KB's static ranking ({why})", [{"source": s} for s in order]


def _check(cands: list[Candidate], proto: Protocol, kb: KnowledgeBase) -> None:
    for c in cands:
        if c.kind == "public":
            raise VerifyError(c.notes[0])
        if c.kind == "kb" and c.pretrain_hash != proto.pretrain_hash:
            raise VerifyError(f"KB '{kb.name}' checkpoint '{c.name}' was pretrained with other settings (pretrain "
                              f"hash {c.pretrain_hash or 'none'}, the KB protocol's is {proto.pretrain_hash}): "
                              "re-export the KB with build-matrix")


class _Runner:
    """Runs a round's cells through the backend and reads them back from the store."""

    def __init__(self, proto: Protocol, target: str, n_train_full: int, cands: list[Candidate], kb: KnowledgeBase,
                 run_dir: Path, store_url: str | None, data_dir: str, backend, emit: Event,  # noqa: ANN001
                 identity: str = "") -> None:
        self.proto, self.target, self.n_full, self.emit = proto, target, n_train_full, emit
        self.identity = identity  # the folder's fingerprint: seeds and keys do not depend on its path
        self.cands = {c.name: c for c in cands}
        self.run_dir, self.store_url, self.data_dir, self.backend = run_dir, store_url, data_dir, backend
        self.kb_ck = str(kb.path / "checkpoints") if kb.path else ""
        self.ext_ck = str(run_dir / "checkpoints")
        self.store = open_store(store_url, run_dir)
        self.records: dict[tuple[str, Level, int], dict] = {}
        self.failed: list[dict] = []
        self.wall = self.cost = 0.0

    def cells(self, rnd: Round) -> list[Cell]:
        """The round's fine-tunes; :class:`PairedCell`: one seed per repeat for every candidate."""
        p = level_protocol(self.proto, rnd.level, self.n_full)
        return [PairedCell("finetune", s, self.target, r, p.hash, self.identity)
                for s in rnd.alive for r in range(rnd.seeds)]

    def __call__(self, rnd: Round, budget: Budget) -> None:
        p = level_protocol(self.proto, rnd.level, self.n_full)
        todo = [c for c in self.cells(rnd) if (c.source, rnd.level, c.repeat) not in self.records]
        self.emit({"event": "round", "round": rnd.index, "level": dataclasses.asdict(rnd.level), "alive": rnd.alive,
                   "seeds": rnd.seeds, "cells": len(todo), "cost": len(todo) * rnd.level.cost})

        def watch(e: dict) -> None:
            if e.get("event") == "failed":
                self.failed.append(e)
            self.emit({**e, "cost": rnd.level.cost})

        for ck, group in ((self.kb_ck, [c for c in todo if not self.cands[c.source].external]),
                          (self.ext_ck, [c for c in todo if self.cands[c.source].external])):
            if group:
                ctx = RunContext(p, self.data_dir, str(self.run_dir), self.store_url, checkpoint_dir=ck,
                                 predictions=True)
                self.backend.run(group, ctx, watch)
        if self.failed:
            raise VerifyError(f"{len(self.failed)} fine-tune(s) failed, e.g. {self.failed[0]['label']}: "
                              f"{self.failed[0]['error']} (finished cells are kept; rerun to resume)")
        for c in todo:
            rec = self.store.get(c.key)
            if rec is None:
                raise VerifyError(f"{c.label}: claimed by another live verify on this store; rerun when it is done")
            self.records[(c.source, rnd.level, c.repeat)] = rec
            budget.spent += rnd.level.cost
            self.wall += float(rec.get("wall_s", 0))
            self.cost += rnd.level.cost
        check_paired({s: {r: self.records[(s, rnd.level, r)] for r in range(rnd.seeds)} for s in rnd.alive},
                     f"round {rnd.index + 1}")
        rnd.values = {s: [float(self.records[(s, rnd.level, r)]["value"]) for r in range(rnd.seeds)]
                      for s in rnd.alive}

    def measurement(self, name: str, level: Level, seeds: int) -> Measurement:
        out = {}
        for r in range(seeds):
            rec = self.records[(name, level, r)]
            tp = rec.get("test_predictions")
            if not tp:
                raise VerifyError(f"cell {rec['key']} holds no test predictions (made by build-matrix, not verify); "
                                  "use verify's own store")
            p, y = decode_predictions(tp)
            out[r] = (p, y, tp["index_digest"])
        return Measurement(name, out)


def verify(target: str, kb: str, sources: list[str] | None = None, top: int = 4, budget: str | None = None,
           seeds: int | None = None, store_url: str | None = None, run_root: str | os.PathLike | None = None,
           arch: str | None = None, backend=None, data_dir: str | None = None,  # noqa: ANN001
           on_event: Event | None = None, n_boot: int = 1000, prior_rows: list[dict] | None = None,
           use_prior: bool = True, prior_level: float = 0.8, threshold: float = DISPLACE) -> VerifyResult:
    """Fine-tune the shortlist under successive halving and compare it, paired, on the same test images.

    The prediction is the prior of the pick (:mod:`recommender.verify.posterior`): ``prior_rows``
    (recommend's ranking rows, best first), else recommend's own run for the KB's model (also with
    ``sources``); ``use_prior`` False: a flat prior and no predicted first."""
    from experiments.backends import LocalBackend
    from experiments.data import default_data_dir, load_dataset, target_split

    emit = on_event or (lambda _e: None)
    kind, amount = parse_budget(budget)
    kbase = load_kb(kb)
    proto = kb_protocol(kbase)
    notes: list[str] = []
    ranking = prior_rows
    if sources:
        names = [s for s in dict.fromkeys(sources) if s != SCRATCH]
        if ranking is None and use_prior:
            ranking = _shortlist(target, kbase, None)[2]
    else:
        names, method, found = _shortlist(target, kbase, top)
        ranking = ranking if ranking is not None else found
        notes.append(f"shortlist: the top {len(names)} by {method}, plus scratch")
    cands = [resolve_candidate(s, kbase, arch) for s in names] + [resolve_candidate(SCRATCH, kbase)]
    if len({c.name for c in cands}) < len(cands):
        raise VerifyError("the same candidate is named twice")
    _check(cands, proto, kbase)
    ddir = str(data_dir or default_data_dir())
    spec = _target_spec(target)
    ds = load_dataset(spec, ddir, proto.side, proto.channels)
    full_split = target_split(ds, proto.evaluation, proto.seed, 0)
    n_full = len(full_split.train)
    fp = ds.fingerprint()
    max_seeds = int(seeds or proto.evaluation.repeats)
    if proto.evaluation.mode == "folds" and max_seeds > proto.evaluation.repeats:
        raise VerifyError(f"--seeds {max_seeds}: the KB protocol has {proto.evaluation.repeats} folds")
    run_dir = Path(run_root or ".") / "runs" / "verify" / f"{fp[:12]}-{proto.hash[:8]}"
    run_dir.mkdir(parents=True, exist_ok=True)
    for c in cands:
        if c.external:
            materialise(c, run_dir / "checkpoints")
    runner = _Runner(proto, spec, n_full, cands, kbase, run_dir, store_url, ddir,
                     backend or LocalBackend(threads=1), emit, identity=fp)
    n_cand = len(cands)
    full_units = n_cand * max_seeds
    bud = Budget(amount * full_units if kind == "fraction" else None)

    def refresh(b: Budget) -> None:
        if kind == "minutes" and runner.cost > 0:
            b.total = amount * 60 / (runner.wall / runner.cost)

    emit({"event": "plan", "units": bud.total if bud.total is not None else float("nan"), "full_units": full_units})
    picker, boots, sigma2 = _picker(kbase, cands, ranking if use_prior else None, runner, n_boot, prior_level,
                                    threshold)
    rounds = successive_halving([c.name for c in cands[:-1]], SCRATCH, max_seeds, bud,
                                lambda rnd: runner(rnd, bud), refresh=refresh, rank=picker.rank)
    rows = _rows(rounds, runner, cands, n_boot, boots)
    post = picker.report(rounds) | {"seed_floor_sd": math.sqrt(sigma2) if math.isfinite(sigma2) else None}
    for r in rows:
        r.update(post["rows"][r["candidate"]])
    if not math.isfinite(sigma2):
        notes.append("the KB has no per-seed records with scratch: measurements with one or two seeds are "
                     "not topped up to the KB's seed spread, so the posterior may trust them too much")
    compute = _compute(runner, rounds, n_cand, max_seeds, n_full, proto, kind, amount)
    last = rounds[-1]
    over = (compute["wall_s"] > amount * 60) if kind == "minutes" else (compute["fraction_planned"] > amount + 1e-9)
    if over:
        notes.append("the smallest schedule (one run per candidate per round) needed more than the budget: "
                     f"{compute['fraction_planned']:.0%} of full compute, {compute['wall_s']:.0f} s")
    if not last.level.full:
        notes.append(f"the last round trained on {last.level.data:.0%} of the images for "
                     f"{level_protocol(proto, last.level, n_full).finetune.epochs} epochs: its AUCs are for that setting")
    if min(r["seeds"] for r in rows) < 3:
        notes.append("rows measured with fewer than 3 seeds: their intervals miss most of the seed-to-seed spread "
                     "(simulated coverage of the 95% interval with 1 seed 87-90%, with 3-5 seeds 96-99%: "
                     "tests/test_verify.py); raise --budget for more seeds")
    return VerifyResult(
        target=spec, fingerprint=fp, kb=kbase.name, protocol=f"{proto.name}@{proto.hash}", run_dir=str(run_dir),
        store=runner.store.url, rows=rows,
        rounds=[{"round": r.index, "level": dataclasses.asdict(r.level), "alive": r.alive, "seeds": r.seeds,
                 "n_train": len(target_split(ds, level_protocol(proto, r.level, n_full).evaluation, proto.seed,
                                             0).train),
                 "epochs": level_protocol(proto, r.level, n_full).finetune.epochs,
                 "protocol_hash": level_protocol(proto, r.level, n_full).hash} for r in rounds],
        compute=compute, verdict=verdict(rows), card=ds.card.to_dict(), notes=notes,
        posterior={k: v for k, v in post.items() if k != "rows"})


def _picker(kb: KnowledgeBase, cands: list[Candidate], ranking: list[dict] | None, runner: _Runner, n_boot: int,
            level: float, threshold: float) -> tuple[Picker, dict[int, BootResult], float]:
    """The posterior's picker, the (shared) bootstrap cache per round, and the KB's per-seed
    variance of a paired difference to scratch (the measurement floor)."""
    names = [c.name for c in cands]
    prior = prior_from_rows(ranking, names, SCRATCH, level)
    order = [r["source"] for r in ranking or [] if r.get("source") in names]
    leader = order[0] if order else None
    recs = kb.records
    sigma2 = seed_floor(recs[recs["metric"] == kb.metric] if recs is not None and len(recs) else None, SCRATCH)
    boots: dict[int, BootResult] = {}

    def block(rnd: Round, which: list[str]):  # noqa: ANN202 - a posterior.Block
        return block_from_boot(_boot(boots, rnd, runner, n_boot), SCRATCH, sigma2, rnd.index, which)

    return Picker(prior, leader, block, threshold), boots, sigma2


def _boot(boots: dict[int, BootResult], rnd: Round, runner: _Runner, n_boot: int) -> BootResult:
    if rnd.index not in boots:
        boots[rnd.index] = paired_bootstrap([runner.measurement(s, rnd.level, rnd.seeds) for s in rnd.alive],
                                            n_boot=n_boot, seed=rnd.index)
    return boots[rnd.index]


def _rows(rounds: list[Round], runner: _Runner, cands: list[Candidate], n_boot: int,
          boots: dict[int, BootResult] | None = None) -> list[dict]:
    """One row per candidate at the last round it reached, compared paired within that round."""
    last_round = {s: r for r in rounds for s in r.alive}
    boots = boots if boots is not None else {}
    boots = {rnd.index: _boot(boots, rnd, runner, n_boot) for rnd in rounds}
    fb = boots[rounds[-1].index]
    leader = fb.names[int(np.argmax(fb.point))]
    kinds = {c.name: c.kind for c in cands}
    rows = []
    for rnd in rounds:
        mine = [c.name for c in cands if last_round[c.name] is rnd]
        rows += table_rows(boots[rnd.index], leader, mine, kinds, rnd.index, rnd.level, rnd is rounds[-1])
    rows.sort(key=lambda r: (-r["round"], -r["auc"]))
    return rows


def table_rows(res: BootResult, leader: str, names: list[str] | None = None, kinds: dict[str, str] | None = None,
               round_index: int = 0, level: Level = FULL, final: bool = True) -> list[dict]:
    """Rows of the verify table for ``names`` measured in one round: AUC with its 95% interval, and
    paired against the leader (the best of the last round, measured in every round) and scratch."""
    out = []
    for name in names or res.names:
        i = res.names.index(name)
        lo, hi = interval(res, name)
        vs_first = None if name == leader else _cmp(compare(res, name, leader))
        vs_scratch = None if name == SCRATCH or SCRATCH not in res.names else _cmp(compare(res, name, SCRATCH))
        out.append({"candidate": name, "kind": (kinds or {}).get(name, ""), "round": round_index, "final": final,
                    "level": dataclasses.asdict(level), "seeds": len(res.repeats), "n_test": res.n_test,
                    "auc": float(res.point[i]), "lo": lo, "hi": hi, "vs_first": vs_first, "vs_scratch": vs_scratch,
                    "negative_transfer": bool(vs_scratch and vs_scratch["hi"] < 0),
                    "per_seed": [round(float(v), 6) for v in res.per_seed[i]]})
    return out


def _cmp(c) -> dict:  # noqa: ANN001 (stats.Comparison)
    return {"diff": c.diff, "lo": c.lo, "hi": c.hi, "p_beats": c.p_a_beats_b, "wilcoxon_p": c.wilcoxon_p,
            "n_seeds": c.n_seeds, "n_test": c.n_test}


def _compute(runner: _Runner, rounds: list[Round], n_cand: int, max_seeds: int, n_full: int, proto: Protocol,
             kind: str, amount: float) -> dict:
    """Planned and measured compute, as fractions of fine-tuning every candidate fully with every seed."""
    seen = sum(float(r.get("n_train", 0)) * float(r.get("epochs", 0)) for r in runner.records.values())
    full = n_cand * max_seeds * n_full * proto.finetune.epochs
    wall = runner.wall
    per_full = [float(r["wall_s"]) for (_, lv, _), r in runner.records.items() if lv.full]
    return {"budget": {"kind": kind, "value": amount}, "cells": len(runner.records),
            "units": runner.cost, "full_units": n_cand * max_seeds,
            "fraction_planned": runner.cost / (n_cand * max_seeds),
            "fraction_measured": seen / full if full else float("nan"),
            "wall_s": round(wall, 2),
            "full_wall_s_estimate": round(float(np.mean(per_full)) * n_cand * max_seeds, 1) if per_full else None,
            "max_seeds": max_seeds}

