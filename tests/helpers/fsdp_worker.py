"""One rank of the FSDP2 check (run by tests/core/test_sharding.py under torchrun, gloo, CPU).

Per projection: a tiny Llama with the adapter, ``fully_shard`` per decoder layer and at the root (what
accelerate's FSDP2 does), each rank on half of the batch. Checked against an unsharded copy that sees the
whole batch in this same process: gradients, the saved adapter (bit-equal round trip, also back into the
sharded model), merge == unmerged output, unmerge restores the sharded weights. Writes one JSON per rank.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the helpers package
from helpers import PROJECTION_CASES, perturb, tiny_llama
from lorazoo import AdapterConfig, attach, load_adapter
from lorazoo.sharding import full


def check(projection: str, out: Path, rank: int, world: int) -> dict[str, float | bool]:
    config = AdapterConfig(
        projection=projection,
        rank=2,
        target_modules="all-linear",
        seed=1,
        projection_kwargs=PROJECTION_CASES[projection],
    )
    model, reference = (attach(tiny_llama(), config) for _ in range(2))  # the same seeds: identical twins
    for twin in (model, reference):
        perturb(twin)  # ΔW ≠ 0, so merge and the gradients of every factor are non-trivial
    ids = torch.randint(0, 128, (2 * world, 11), generator=torch.Generator().manual_seed(5))
    reference(input_ids=ids, labels=ids).loss.backward()
    expected_grads = {n: p.grad for n, p in reference.named_parameters() if p.requires_grad}

    mesh = init_device_mesh("cpu", (world,))
    for layer in model.base_model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    mine = ids[2 * rank : 2 * rank + 2]  # equal-length rows: the mean of rank means is the batch mean
    model(input_ids=mine, labels=mine).loss.backward()
    grads = {n: full(p.grad) for n, p in model.named_parameters() if p.requires_grad}
    result: dict[str, float | bool] = {
        "sharded": all(type(p).__name__ == "DTensor" for p in model.projection.parameters()),
        "same_grad_names": sorted(grads) == sorted(expected_grads),
        "grad_max_abs_diff": max(float((grads[n] - expected_grads[n]).abs().max()) for n in grads),
    }
    model.zero_grad(set_to_none=True)

    folder = out / projection
    model.save_adapter(folder)  # every rank gathers; rank 0 writes
    dist.barrier()
    saved = load_adapter(tiny_llama(), folder)
    want = reference.adapter_tensors()
    got = saved.adapter_tensors()
    result["round_trip_bit_equal"] = want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    model.load_adapter_weights(folder)  # back into the sharded model: each rank keeps its own shard
    again = model.adapter_tensors()
    result["reload_sharded_bit_equal"] = all(torch.equal(want[k], again[k]) for k in want)

    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
        result["sharded_vs_reference_forward"] = float((unmerged - reference(input_ids=ids).logits).abs().max())
        weight = model.base_model.model.layers[0].self_attn.q_proj.base_layer.weight
        before = full(weight).clone()
        model.merge()
        merged = model(input_ids=ids).logits
        model.unmerge()
        result["merge_max_abs_diff"] = float((merged - unmerged).abs().max())
        result["unmerge_restores"] = float((full(weight) - before).abs().max())
    return result


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    out = Path(sys.argv[1])
    projections = sys.argv[2].split(",")
    results = {p: check(p, out, rank, world) for p in projections}
    (out / f"rank{rank}.json").write_text(json.dumps(results, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    main()
