"""decided_on_rank_zero on two real gloo processes: every rank gets rank 0's answer or its failure at once."""

from __future__ import annotations

import datetime
import os
import socket

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from lorazoo.errors import ConfigError
from lorazoo.train.engine.distributed import decided_on_rank_zero


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _decide(kind: str):
    if kind == "value":
        return {"resume_from": "checkpoint-7"}
    if kind == "lorazoo":
        raise ConfigError("run dir holds another run")
    raise OSError("disk full")


def _worker(rank: int, port: int, kind: str, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=30))
    try:
        calls = []

        def decide():
            calls.append(rank)
            return _decide(kind)

        try:
            results[rank] = ("ok", decided_on_rank_zero(decide), calls)
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            results[rank] = ("raised", f"{type(exc).__name__}: {exc}", calls)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    "kind,expected",
    [
        ("value", [("ok", {"resume_from": "checkpoint-7"})] * 2),
        ("lorazoo", [("raised", "ConfigError: run dir holds another run")] * 2),
        ("other", [("raised", "OSError: disk full"), ("raised", "RuntimeError: rank 0 failed: OSError: disk full")]),
    ],
)
def test_every_rank_gets_rank_zeros_answer_or_failure(kind, expected):
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(_free_port(), kind, results), nprocs=2, join=True)
        got = dict(results)
    assert [got[r][:2] for r in (0, 1)] == expected
    assert got[0][2] == [0] and got[1][2] == []  # only rank 0 decided
