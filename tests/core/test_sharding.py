"""FSDP2 (``fully_shard``, DTensor parameters) with 2 gloo processes on a tiny Llama, every projection:
gradients equal one process on the whole batch, save → load is bit-equal (also back into the sharded
model), merge equals the unmerged output and unmerge restores the sharded weights (tests/fsdp_worker.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lorazoo import projection_names

HERE = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_fsdp2_two_gloo_processes_every_projection(tmp_path: Path):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    names = projection_names()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(HERE / "fsdp_worker.py"),
        str(tmp_path),
        ",".join(names),
    ]
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=500)
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
