"""Which modules are adapted, in which order, and where their factors live inside θ_D.

θ_D is the concatenation, in model order, of vec(A_l) (r × in) then vec(B_l) (out × r) for every
adapted module l (a Linear, Conv1D or Embedding: in = num_embeddings, out = dim). Everything downstream
(projections, the adapted layers, merge, export, counting) reads only this layout, so it can be built from a
meta-device model without weights. This module knows names and shapes only; listing the Linears of a live
model (seeing through lorazoo's own wrappers) lives beside those wrappers, in ``targets.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

from lorazoo.errors import TargetModulesError

ALL_LINEAR = "all-linear"
# Top-level children that hold task heads; `all-linear` never adapts them (as PEFT does for lm_head).
HEAD_MODULE_NAMES = frozenset({"lm_head", "classifier", "score", "qa_outputs", "cls", "head"})


@dataclass(frozen=True)
class LayoutEntry:
    """One adapted Linear: its name, shape, rank and offsets of A (r × in) and B (out × r) in θ_D."""

    name: str
    in_features: int
    out_features: int
    rank: int
    offset: int

    @property
    def a_numel(self) -> int:
        return self.rank * self.in_features

    @property
    def b_numel(self) -> int:
        return self.out_features * self.rank

    @property
    def a_offset(self) -> int:
        return self.offset

    @property
    def b_offset(self) -> int:
        return self.offset + self.a_numel

    @property
    def numel(self) -> int:
        return self.a_numel + self.b_numel

    @property
    def kind(self) -> str:
        """The module kind shared across blocks (``query``, ``q_proj``...): the last name component."""
        return self.name.rsplit(".", 1)[-1]

    @property
    def shape_signature(self) -> tuple[int, int, int]:
        return (self.in_features, self.out_features, self.rank)


class Layout(Sequence[LayoutEntry]):
    """The ordered adapted modules; ``D`` is the length of θ_D."""

    def __init__(self, entries: Iterable[LayoutEntry]):
        self.entries: tuple[LayoutEntry, ...] = tuple(entries)
        self._by_name = {e.name: e for e in self.entries}
        offset = 0
        for entry in self.entries:
            if entry.offset != offset:
                raise ValueError(f"layout entry {entry.name} has offset {entry.offset}, expected {offset}")
            offset += entry.numel
        self.D = offset

    @classmethod
    def from_shapes(cls, shapes: Iterable[tuple[str, int, int]], rank: int | Callable[[int, int], int]) -> Layout:
        """Build from (name, in_features, out_features) triples, e.g. for a 7B model without weights.

        ``rank`` is one rank for every module or a function of (in, out) for methods whose factor rank
        depends on the module (``projections.layout_rank``).
        """
        entries, offset = [], 0
        for name, in_features, out_features in shapes:
            r = rank(int(in_features), int(out_features)) if callable(rank) else rank
            entry = LayoutEntry(name, int(in_features), int(out_features), r, offset)
            entries.append(entry)
            offset += entry.numel
        return cls(entries)

    def __getitem__(self, index):
        return self.entries[index]

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def entry(self, name: str) -> LayoutEntry:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{name!r} is not an adapted module; adapted: {list(self._by_name)[:8]}...") from None

    @property
    def segment_sizes(self) -> list[int]:
        """Sizes of [A_1, B_1, A_2, B_2, ...] in θ_D: one ``split`` call yields every factor."""
        return [size for e in self.entries for size in (e.a_numel, e.b_numel)]

    def to_list(self) -> list[dict]:
        return [asdict(e) for e in self.entries]

    @classmethod
    def from_list(cls, rows: Iterable[dict]) -> Layout:
        return cls(LayoutEntry(**row) for row in rows)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Layout) and self.entries == other.entries

    def __repr__(self) -> str:
        return f"Layout({len(self)} modules, D={self.D:,})"


def select_targets(names: Sequence[str], head_names: set[str], target_modules: Sequence[str] | str) -> list[str]:
    """The names among ``names`` (adaptable modules, model order) that ``target_modules`` selects.

    A list matches exact names or dotted suffixes (``query`` matches ``...self.query``), and every entry
    must match something (a silently skipped entry would train a different model than the one asked
    for); a single string other than ``all-linear`` is a regex that must match the full name (PEFT's
    convention); ``all-linear`` takes every name except the task heads in ``head_names`` (the caller
    passes Linear/Conv1D names only). Pure name logic, so it runs on any listing (a real model, a
    meta-device one) without knowing lorazoo's wrappers.
    """
    names = list(names)
    unmatched: list[str] = []
    if is_all_linear(target_modules):
        matched = [n for n in names if n not in head_names]
    elif isinstance(target_modules, str):
        try:
            pattern = re.compile(target_modules)
        except re.error as exc:
            raise TargetModulesError(f"target_modules regex {target_modules!r} is invalid: {exc}") from None
        matched = [n for n in names if pattern.fullmatch(n)]
    else:
        targets = list(target_modules)
        hits = {t: [n for n in names if n == t or n.endswith("." + t)] for t in targets}
        matched = [n for n in names if any(n in hits[t] for t in targets)]
        unmatched = [t for t in targets if not hits[t]]
    if not matched or unmatched:
        kinds = sorted({n.rsplit(".", 1)[-1] for n in names})
        which = f" (entries {unmatched} match nothing)" if matched else ""
        raise TargetModulesError(
            f"target_modules={target_modules!r}{which} matched no adaptable module (nn.Linear, Conv1D, nn.Embedding); "
            f"module kinds in this model: {kinds} (e.g. {names[:3]}), or use 'all-linear'"
        )
    return matched


def is_all_linear(target_modules: Sequence[str] | str) -> bool:
    return target_modules == ALL_LINEAR or (
        not isinstance(target_modules, str) and list(target_modules) == [ALL_LINEAR]
    )
