"""Paired by design: within a round, every candidate gets the same training subsample, head seed
and test images.

Why: the verdict and the posterior compare candidates through their paired differences. A
difference is paired only if the two fine-tunes differ in nothing but the starting weights; a
head seed or a data order that differs by candidate adds their seed noise to every difference.

A KB cell's seed comes from (protocol, source, target, repeat), so two sources never share one;
verify's cells (:class:`PairedCell`) take it from (protocol, the folder's content, repeat) only: the new head's
initialisation and the batch order are then the same for every candidate of a round (for KB
sources of one architecture the head is drawn at the same point of one seeded stream). The
training subsample and test images are functions of (target, protocol, repeat) already.
:func:`check_paired` checks the stored records of a round before any comparison is made.
"""

from __future__ import annotations

from dataclasses import dataclass

from experiments.cells import Cell
from experiments.data import stable_seed
from experiments.store import cell_key
from imagesets import UserError

__all__ = ["PairedCell", "PairingError", "check_paired", "PAIRED_FIELDS"]

# what must agree across the candidates of a round, per repeat (record key → what it stands for)
PAIRED_FIELDS = {"protocol_hash": "protocol (training size and epochs)", "repeat": "seed index",
                 "seed": "head seed and batch order", "n_train": "training subsample",
                 "n_test": "test images", "test_digest": "test images"}


class PairingError(UserError):
    """A round whose candidates were not trained and tested alike: their comparison is not paired."""


@dataclass(frozen=True)
class PairedCell(Cell):
    """A verify fine-tune whose seed is shared by every candidate of its round.

    ``identity``: what names the folder in the seed and the store key (its content fingerprint);
    empty: the target spec, as a KB cell."""

    identity: str = ""

    @property
    def key(self) -> str:
        return cell_key(self.kind, self.source, self.identity or self.target, self.repeat, self.protocol_hash)

    @property
    def seed(self) -> int:
        return stable_seed(self.protocol_hash, self.kind, "verify-paired", self.identity or self.target, self.repeat)


def _fields(rec: dict) -> dict:
    tp = rec.get("test_predictions") or {}
    return {"protocol_hash": rec.get("protocol_hash"), "repeat": rec.get("repeat"), "seed": rec.get("seed"),
            "n_train": rec.get("n_train"), "n_test": rec.get("n_test"),
            "test_digest": tp.get("index_digest", rec.get("test_digest"))}


def check_paired(records: dict[str, dict[int, dict]], where: str = "a round") -> None:
    """Raise :class:`PairingError` unless, for every repeat, every candidate's record agrees on
    :data:`PAIRED_FIELDS`. ``records``: candidate → repeat → its stored record."""
    names = list(records)
    if len(names) < 2:
        return
    repeats = set(records[names[0]])
    for c in names[1:]:
        if set(records[c]) != repeats:
            raise PairingError(f"{where}: {c} was measured on seeds {sorted(records[c])}, "
                               f"{names[0]} on {sorted(repeats)}; a paired round gives every candidate the same seeds")
    for r in sorted(repeats):
        ref = _fields(records[names[0]][r])
        for c in names[1:]:
            got = _fields(records[c][r])
            for k, what in PAIRED_FIELDS.items():
                if got[k] != ref[k]:
                    raise PairingError(
                        f"{where}, seed {r}: {c} and {names[0]} differ in {k} ({got[k]} vs {ref[k]}: "
                        f"their {what} differ), so their comparison is not paired; cells from an earlier "
                        "catscans (per-candidate seeds) cannot be paired: remove the run folder or use "
                        "another --run-root")
