"""FSDP2 (``fully_shard``, DTensor parameters) with 2 gloo processes on a tiny Llama, every projection:
gradients equal one process on the whole batch, save → load is bit-equal (also back into the sharded
model), merge equals the unmerged output and unmerge restores the sharded weights (tests/helpers/fsdp_worker.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.parallel import HELPERS, torchrun_two

from lorazoo import projection_names


@pytest.mark.slow
def test_fsdp2_two_gloo_processes_every_projection(tmp_path: Path):
    names = projection_names()
    done = torchrun_two(HELPERS / "fsdp_worker.py", str(tmp_path), ",".join(names))
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert sorted(results) == sorted(names)
        for name, r in results.items():
            assert r["sharded"] and r["same_grad_names"], (name, r)  # θ really was a DTensor shard
            assert r["grad_max_abs_diff"] < 1e-6, (name, r)
            assert r["round_trip_bit_equal"] and r["reload_sharded_bit_equal"], (name, r)
            assert r["sharded_vs_reference_forward"] < 1e-6, (name, r)
            assert r["merge_max_abs_diff"] < 1e-4 and r["unmerge_restores"] < 1e-6, (name, r)
