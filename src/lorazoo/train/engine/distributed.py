"""Multi-process jobs (torchrun, ``accelerate launch``, Slurm tasks): the TrainingArguments keys that make
DDP / FSDP / DeepSpeed / torch.compile real, one run directory for all ranks, and Slurm's ranks.

The engines do the work (Trainer + accelerate wrap the model, shard the data, reduce gradients); this
module only feeds them the launch's facts and refuses a launch they would silently not honour, such as
two independent replicas under torchrun on a CPU machine.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from lorazoo.errors import LoraZooError
from lorazoo.train.errors import ConfigError

T = TypeVar("T")

DDP_BACKENDS = ("gloo", "nccl", "mpi", "ccl", "hccl", "cncl", "mccl", "xccl")
FSDP_OPTIONS = ("full_shard", "shard_grad_op", "hybrid_shard", "hybrid_shard_zero2", "no_shard", "offload", "auto_wrap")
CONFIGS = Path(__file__).resolve().parents[4] / "configs"


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def global_rank() -> int:
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "") not in ("",):
            return int(os.environ[var])
    return 0


def is_rank_zero() -> bool:
    """The main process of this launch (torchrun, accelerate launch, Slurm tasks), or a plain single process.

    Asks the process group when one exists, else the launcher's RANK. Not accelerate's PartialState: built
    before Trainer on a CPU launch it would settle as one non-distributed process on every rank (it is only
    distributed on CPU when created with cpu=True), making every rank "main" and Trainer's DDP single-process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return global_rank() == 0


def decided_on_rank_zero(decide: Callable[[], T]) -> T:
    """Run ``decide`` on rank 0 alone and give every rank its result, or raise on every rank what it raised.

    For choices the ranks must share and that rank 0 makes while writing (whether the run dir is this run's,
    which checkpoint to resume): other ranks reading the dir themselves would race those writes. A
    LoraZooError reaches the other ranks as itself; any other failure (an OSError, say) as a RuntimeError
    naming it, so no rank is left waiting for an answer until the collective timeout.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return decide()
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            box = [(True, decide())]
        except Exception as exc:
            shared = (
                exc if isinstance(exc, LoraZooError) else RuntimeError(f"rank 0 failed: {type(exc).__name__}: {exc}")
            )
            dist.broadcast_object_list([(False, shared)], src=0)
            raise
    dist.broadcast_object_list(box, src=0)  # rank 0's list is left as it is: its own objects, not copies
    ok, value = box[0]
    if not ok:
        raise value
    return cast(T, value)


# ----------------------------------------------------------------------------- options → TrainingArguments
def _fsdp_value(fsdp: str | list[str]) -> str:
    words = fsdp.split() if isinstance(fsdp, str) else [str(w) for w in fsdp]
    bad = [w for w in words if w not in FSDP_OPTIONS]
    if bad:
        raise ConfigError(f"trainer.fsdp={fsdp!r} has unknown option(s) {bad}; valid words: {list(FSDP_OPTIONS)}")
    return " ".join(words)


def resolve_deepspeed(path: str) -> str:
    """A DeepSpeed JSON as given, else relative to the repository (``configs/deepspeed/zero2.json``)."""
    candidates = [Path(path), CONFIGS.parent / path, CONFIGS / "deepspeed" / path]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
    shipped = sorted(p.name for p in (CONFIGS / "deepspeed").glob("*.json"))
    raise ConfigError(
        f"trainer.deepspeed={path!r} is not a file; give a DeepSpeed JSON path or one of the shipped "
        f"configs/deepspeed/{{{','.join(shipped)}}}"
    )


def scale_arguments(t: Any) -> dict[str, Any]:
    """TrainingArguments keys for devices, DDP, FSDP, DeepSpeed and torch.compile from ``trainer.*``."""
    import torch

    if t.ddp_backend is not None and t.ddp_backend not in DDP_BACKENDS:
        raise ConfigError(
            f"trainer.ddp_backend={t.ddp_backend!r} is not valid; choose one of {list(DDP_BACKENDS)} or null"
        )
    fsdp = _fsdp_value(t.fsdp)
    if fsdp and t.deepspeed:
        raise ConfigError("trainer.fsdp and trainer.deepspeed are both set; pick one sharding engine")
    deepspeed = resolve_deepspeed(t.deepspeed) if t.deepspeed else None
    use_cpu = (not torch.cuda.is_available()) if t.use_cpu is None else bool(t.use_cpu)
    if use_cpu and (fsdp or t.deepspeed):
        # accelerate runs FSDP / DeepSpeed only on accelerators; on CPU Trainer would quietly fall back to DDP
        engine = f"trainer.fsdp={fsdp!r}" if fsdp else f"trainer.deepspeed={t.deepspeed!r}"
        raise ConfigError(
            f"{engine} needs GPUs, but this job runs on CPU (trainer.use_cpu={t.use_cpu!r}, "
            f"CUDA available: {torch.cuda.is_available()}); drop it on CPU (plain DDP shards nothing)"
        )
    kwargs: dict[str, Any] = {
        "use_cpu": use_cpu,
        "ddp_backend": t.ddp_backend,
        "ddp_find_unused_parameters": t.ddp_find_unused_parameters,
        "ddp_timeout": int(t.ddp_timeout),
        "torch_compile": bool(t.torch_compile),
    }
    if t.torch_compile:
        kwargs["torch_compile_backend"] = t.torch_compile_backend or "inductor"
        if t.torch_compile_mode:
            kwargs["torch_compile_mode"] = t.torch_compile_mode
    if fsdp:
        kwargs["fsdp"] = fsdp
        kwargs["fsdp_config"] = dict(t.fsdp_config or {})
    if deepspeed:
        kwargs["deepspeed"] = deepspeed
    return kwargs


def check_data_parallel(args: Any) -> None:
    """A multi-process launch must give Trainer as many processes as the launcher started."""
    launched = world_size()
    if launched > 1 and int(args.world_size) != launched:
        raise ConfigError(
            f"launched {launched} processes (WORLD_SIZE={launched}) but Trainer runs {args.world_size} "
            f"(parallel_mode={args.parallel_mode.value}); each would train alone on all the data. On CPU set "
            f"trainer.use_cpu=true (gloo); on GPUs give each process its own device (trainer.ddp_backend=nccl)"
        )


def check_engine(trainer: Any, t: Any) -> None:
    """The sharding engine asked for is the one Trainer set up (it falls back to DDP without saying so)."""
    if _fsdp_value(t.fsdp) and not trainer.is_fsdp_enabled:
        raise ConfigError(
            f"trainer.fsdp={t.fsdp!r} was not taken up by Trainer/accelerate "
            f"(distributed type {trainer.accelerator.distributed_type}); launch with torchrun on GPUs"
        )
    if t.deepspeed and not trainer.is_deepspeed_enabled:
        raise ConfigError(
            f"trainer.deepspeed={t.deepspeed!r} was not taken up by Trainer/accelerate "
            f"(distributed type {trainer.accelerator.distributed_type}); launch with torchrun/deepspeed on GPUs"
        )


# ----------------------------------------------------------------------------- Slurm tasks as ranks
def adopt_slurm_environment() -> bool:
    """In a Slurm job of several tasks started without torchrun, export RANK/WORLD_SIZE/LOCAL_RANK and
    MASTER_ADDR/MASTER_PORT (first host of the node list; port from the job id) via submitit."""
    tasks = int(os.environ.get("SLURM_NTASKS", "1") or 1)
    if tasks <= 1 or "RANK" in os.environ or "SLURM_PROCID" not in os.environ:
        return False
    try:
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError:
        raise ConfigError(
            f"this Slurm job has {tasks} tasks; mapping them to ranks needs submitit (pip install 'lorazoo[slurm]')"
        ) from None
    os.environ.setdefault("SUBMITIT_EXECUTOR", "slurm")  # submitit's JobEnvironment reads SLURM_* under this tag
    # each task sees all of the node's GPUs (gpus_per_node) and takes cuda:LOCAL_RANK, as under torchrun
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return True


# ----------------------------------------------------------------------------- one run dir for all ranks
def agree_on_output_dir(out: Path, backend: str | None) -> Path:
    """Rank 0's run directory, on every rank (Hydra's time-stamped dir can differ by a second per rank)."""
    if world_size() <= 1:
        return out
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend=backend)  # accelerate reuses this group
    shared = [str(out)]
    dist.broadcast_object_list(shared, src=0)
    return Path(shared[0])


def follower_overrides(argv: list[str]) -> list[str]:
    """Hydra overrides for ranks > 0 of a torchrun/accelerate launch: their own scratch run dir (no
    stray time-stamped dirs, no concurrent writes to rank 0's .hydra/); the real dir comes from rank 0."""
    if world_size() <= 1 or global_rank() == 0:
        return argv
    scratch = tempfile.mkdtemp(prefix=f"lorazoo-rank{global_rank()}-")
    mine = ("hydra.run.dir=", "hydra.sweep.dir=", "hydra.output_subdir=")
    kept = [a for a in argv if not a.lstrip("+").startswith(mine)]
    return [*kept, f"hydra.run.dir={scratch}/run", f"hydra.sweep.dir={scratch}/sweep", "hydra.output_subdir=null"]
