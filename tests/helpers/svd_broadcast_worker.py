"""One rank of tests/core/test_weight_aware.py's distributed check (torchrun, gloo, CPU).

Rank 1 stands in for a machine whose BLAS returns the other sign of every singular pair (an SVD's sign is
free); after ``attach`` every rank must hold rank 0's structures, so every rank trains the same ΔW.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the helpers package
from helpers import tiny_llama
from lorazoo import AdapterConfig, attach


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    if rank == 1:
        svd = torch.linalg.svd

        def flipped(matrix: torch.Tensor, full_matrices: bool = True):
            u, s, vh = svd(matrix, full_matrices=full_matrices)
            return u.neg(), s, vh.neg()

        torch.linalg.svd = flipped
    out = {}
    for projection in sys.argv[2].split(","):
        model = attach(tiny_llama(0), AdapterConfig(projection=projection, rank=2, target_modules=["q_proj", "v_proj"]))
        out[projection] = {k: getattr(model.projection, k).tolist() for k in ("svd_U", "svd_S", "svd_Vh")}
    (Path(sys.argv[1]) / f"rank{rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
