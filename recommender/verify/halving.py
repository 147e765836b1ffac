"""Successive halving under a compute budget (after Karnin et al. 2013's budgeted variant).

Every candidate gets a short, cheap run; the better half of the sources (by the caller's
``rank``: verify's posterior P(best); by default the measured mean) gets more training
images, epochs and seeds; and so on until two sources are left, which get what remains of
the budget. ``scratch`` is the reference every gain is measured against, so it is kept in
every round and is never eliminated (it is also a candidate: it can be first).

Round k of K gets 2^k / (2^k + ... + 2^(K-1)) of the budget that is left (the last round
takes the rest): each round twice the share of the one before, because the last round's
measurements are the ones the verdict compares.
A round's seeds are the share divided by (candidates alive x cost of one run at that
round's level), at least one and at most ``max_seeds``. Compute is in units of one full
fine-tune (all training images, all epochs); a level's cost is data fraction x epoch
fraction. The engine does no training: ``measure`` runs (or replays) a round's cells, so
`verify` and the replay benchmark share the schedule exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Level", "FULL", "Round", "Budget", "levels_for", "n_rounds", "successive_halving"]


@dataclass(frozen=True)
class Level:
    """A cheaper version of the protocol: fractions of its training images and epochs."""

    data: float = 1.0
    epochs: float = 1.0

    @property
    def cost(self) -> float:
        return self.data * self.epochs

    @property
    def full(self) -> bool:
        return self.data >= 1 and self.epochs >= 1


FULL = Level()


@dataclass
class Round:
    index: int
    level: Level
    alive: list[str]  # sources still in the race, plus the reference
    seeds: int  # seeds per candidate at this level, counting ones already run
    values: dict[str, list[float]] = field(default_factory=dict)  # per-seed AUC, filled by measure


@dataclass
class Budget:
    """Compute left, in full fine-tunes; ``spent`` is counted by the caller's ``measure``."""

    total: float | None  # None: not known yet (a minutes budget before anything ran)
    spent: float = 0.0

    @property
    def left(self) -> float | None:
        return None if self.total is None else max(0.0, self.total - self.spent)


def n_rounds(n_sources: int, keep: int = 2) -> int:
    """Rounds until at most ``keep`` sources are left: 4 → 2 is two rounds, 12 → 6 → 3 → 2 four."""
    k, n = 1, n_sources
    while n > keep:
        n = max(keep, math.ceil(n / 2))
        k += 1
    return k


def levels_for(rounds: int, seeds_only: bool = False) -> list[Level]:
    """Round k of K trains on 2^-(K-1-k) of the images for as large a share of the epochs
    (at least a quarter), so each round costs about four times the one before; the last is full.
    ``seeds_only``: every round is the full protocol and rounds differ only in seeds (replay)."""
    if seeds_only:
        return [FULL] * rounds
    out = []
    for k in range(rounds):
        f = 2.0 ** -(rounds - 1 - k)
        out.append(Level(max(f, 0.125), max(f, 0.25)))
    return out


def successive_halving(sources: list[str], reference: str, max_seeds: int, budget: Budget,
                       measure: Callable[[Round], None], levels: list[Level] | None = None,
                       keep: int = 2, seeds_only: bool = False,
                       refresh: Callable[[Budget], None] | None = None,
                       rank: Callable[[list[Round]], list[str]] | None = None) -> list[Round]:
    """Run the rounds; ``measure(round)`` must fill ``round.values`` and add to ``budget.spent``.

    A budget of at least every candidate x ``max_seeds`` full runs skips halving: one full round
    with every seed. ``refresh`` may update ``budget.total`` between rounds (a minutes budget
    turns into units once the speed of a run is known). ``rank(rounds so far)`` orders the alive
    sources best first (default: by the last round's mean; verify passes the posterior's order).
    """
    n_all = len(sources) + 1
    if budget.total is not None and budget.total >= n_all * max_seeds * (1 - 1e-9):
        rnd = Round(0, FULL, [*sources, reference], max_seeds)
        measure(rnd)
        return [rnd]
    k_total = n_rounds(len(sources), keep)
    levels = levels or levels_for(k_total, seeds_only)
    alive = list(sources)
    rounds: list[Round] = []
    for k in range(k_total):
        if refresh is not None:
            refresh(budget)
        level = levels[k]
        have = rounds[-1].seeds if rounds and rounds[-1].level == level else 0
        group = [*alive, reference]
        left = budget.left
        if left is None:
            seeds = max(1, have)
        else:
            share = left * 2.0 ** k / sum(2.0 ** j for j in range(k, k_total))
            seeds = have + int(share // (len(group) * level.cost) + 1e-9)
        seeds = min(max_seeds, max(1, have, seeds))
        rnd = Round(k, level, group, seeds)
        measure(rnd)
        rounds.append(rnd)
        if k < k_total - 1:
            if rank is not None:
                order = rank(rounds)
                ranked = [s for s in order if s in alive] + [s for s in alive if s not in order]
            else:
                mean = {s: sum(rnd.values[s]) / len(rnd.values[s]) for s in alive}
                ranked = sorted(alive, key=lambda s: (-mean[s], s))
            alive = ranked[:max(keep, math.ceil(len(alive) / 2))]
    return rounds
