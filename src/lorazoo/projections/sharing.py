"""What the shared-factor projections (tied, vera) have in common: layer groups, batched factors, random matrices.

Both Tied-LoRA and VeRA build every factor as a per-layer diagonal scaling of a shared matrix:
A_l = diag(a_l) A_g and B_l = diag(b_l) B_g. For a group of k layers with one shape this is one
broadcast product per factor, giving (k, r·h) and (k, o·r) blocks whose row i is vec(A_l), vec(B_l) of the
group's i-th layer. ``LayerGroups.assemble`` puts those rows into layout order with a single ``cat``:
no per-layer arithmetic and no D-long index tensor (θ_D can be 10^7–10^8 entries).
"""

from __future__ import annotations

from typing import Callable, Hashable, Sequence

import torch

from ..layout import Layout, LayoutEntry
from . import rng as zrandom


class LayerGroups:
    """A partition of a layout's layers by ``key(entry)``; groups keep first-appearance order."""

    def __init__(self, layout: Layout, key: Callable[[LayoutEntry], Hashable]):
        members: dict[Hashable, list[int]] = {}
        for index, entry in enumerate(layout):
            members.setdefault(key(entry), []).append(index)
        self.keys: list[Hashable] = list(members)
        self.members: list[list[int]] = list(members.values())
        self.entries: list[list[LayoutEntry]] = [[layout[i] for i in m] for m in self.members]
        group_of = {i: (g, pos) for g, m in enumerate(self.members) for pos, i in enumerate(m)}
        self._plan = [group_of[i] for i in range(len(layout))]  # (group, row) of each layer in layout order
        self._interleaved = self._is_interleaved()

    def __len__(self) -> int:
        return len(self.members)

    def _is_interleaved(self) -> bool:
        """True when the layout is blocks that each hold one layer of every group in the same order
        (q, v, q, v, ... or q, k, v, o, gate, up, down, ...): then the rows line up by block."""
        count = len(self.members[0]) if self.members else 0
        if any(len(m) != count for m in self.members):
            return False
        pattern = [g for g, _ in self._plan[: len(self.members)]]
        return all(self._plan[i] == (pattern[i % len(pattern)], i // len(pattern)) for i in range(len(self._plan)))

    def assemble(self, blocks: Sequence[torch.Tensor | tuple[torch.Tensor, ...]]) -> torch.Tensor:
        """θ_D (layout order) from each group's (k_g, ·) block(s), in one concatenation.

        A group may give its block as column parts (e.g. its A rows and B rows), which are then joined by
        the same single ``cat`` instead of being concatenated first: θ_D-sized data is written once.
        Interleaved layouts: parts side by side, then flatten. Otherwise each part is unbound into row
        views and the views are concatenated in layout order; only references are shuffled in Python.
        """
        parts = [block if isinstance(block, tuple) else (block,) for block in blocks]
        if self._interleaved:
            return torch.cat([part for group in parts for part in group], dim=1).reshape(-1)
        views = [[part.unbind(0) for part in group] for group in parts]
        return torch.cat([rows[pos] for g, pos in self._plan for rows in views[g]])


def scaled_factor_rows(
    a_scale: torch.Tensor, a: torch.Tensor, b_scale: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row blocks vec(diag(a_scale_i) a) and vec(diag(b_scale_i) b) for the k layers of one group.

    ``a_scale`` (k, r), ``a`` (r, h), ``b_scale`` (k, o), ``b`` (o, r) → ((k, r·h), (k, o·r)), ready for
    ``LayerGroups.assemble``.
    """
    k = a_scale.shape[0]
    return (a_scale.unsqueeze(-1) * a).reshape(k, -1), (b_scale.unsqueeze(-1) * b).reshape(k, -1)


def uniform_matrix(seed: int, purpose: str, shape: tuple[int, int], bound: float) -> torch.Tensor:
    """A (rows × cols) float32 matrix with U(±bound) entries from the counter-based generator."""
    values = zrandom.uniform(seed, purpose, shape[0] * shape[1], -bound, bound)
    return zrandom.as_tensor(values.reshape(shape))
