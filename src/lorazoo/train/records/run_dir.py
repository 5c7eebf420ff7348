"""Run identity: which run a directory belongs to, who may write in it, and when a job is already done.

A run dir holds ``lorazoo_run.json``: the fingerprint of the resolved config that determines the result
(every key except the pure logging/budget keys in ``UNFINGERPRINTED``) and lorazoo's random-structure
generator version. A new run refuses a non-empty directory that is not its own, a resume refuses a run
of another config (naming the first differing key), a finished run of the same config is reused rather
than retrained (resumable sweeps), and an OS lock (``fcntl.flock``) stops a second concurrent run at once.
Nothing here imports torch: it runs before any model or data is loaded.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from lorazoo.files import RUN_FILE, atomic_write_json, file_sha256, leftover_scratch
from lorazoo.projections.rng import GENERATOR_VERSION
from lorazoo.train.errors import RunDirError
from lorazoo.train.records.checkpoints import complete_checkpoints
from lorazoo.train.records.config_diff import NO_DIFFERENCE, first_difference, flatten

LOCK_FILE = ".lorazoo.lock"
METRICS_FILE = "metrics.json"
# Keys that cannot change the trained adapter or its metrics: where/how progress is shown (logging) and how
# often work is saved or which resources read the data (budget). A key not listed here is part of the run.
LOGGING_KEYS = ("logger", "name", "trainer.progress_bar", "trainer.logging_steps")
BUDGET_KEYS = ("trainer.resume", "trainer.save_steps", "trainer.save_total_limit", "trainer.num_workers")
UNFINGERPRINTED = LOGGING_KEYS + BUDGET_KEYS
# what Hydra itself may have put into a job dir before lorazoo runs (plus our own lock file)
_HARMLESS = {LOCK_FILE, ".hydra", ".submitit"}
ADAPTER_DIR = "adapter"  # the run's artifacts: every file under it is hashed into the completed metrics.json


def _excluded(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in UNFINGERPRINTED)


def identity(plain_cfg: dict[str, Any]) -> dict[str, Any]:
    """The flattened config keys that decide the result, plus the generator version."""
    keys = {k: v for k, v in flatten(plain_cfg).items() if not _excluded(k)}
    keys["lorazoo.generator_version"] = GENERATOR_VERSION
    return dict(sorted(keys.items()))


def fingerprint(ident: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when the file is absent, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class Claim:
    """This process's hold on a run dir: the lock stays held until ``release()`` (or process exit)."""

    directory: Path
    fingerprint: str
    identity: dict[str, Any]
    completed: dict[str, Any] | None = None  # the earlier record when the same config already finished
    resume: bool = False
    _fd: int | None = field(default=None, repr=False)

    def record_identity(self) -> None:
        """Write lorazoo_run.json: from here on the directory is this run's."""
        atomic_write_json(self.directory / RUN_FILE, {"fingerprint": self.fingerprint, "identity": self.identity})

    def sweep_scratch(self) -> list[str]:
        """Delete what a killed write of this run left: io.atomic_write's ``.<name>.<random>.tmp`` scratch files
        (the rename never happened, so the real file is intact). Only the owner calls this, before writing."""
        removed = []
        for scratch in leftover_scratch(self.directory):
            scratch.unlink()
            removed.append(str(scratch.relative_to(self.directory)))
        return removed

    def __getstate__(self) -> dict[str, Any]:
        """A copy sent to another process (the other ranks) never holds the lock: it must not close our fd."""
        return {**self.__dict__, "_fd": None}

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def _open_lock(path: Path) -> tuple[int, bool]:
    """``path`` opened read-write, created exclusively when absent; never through a symlink (O_NOFOLLOW) and only
    as a regular file with one link, so a planted link cannot make the claim truncate a file elsewhere."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644), True
    except FileExistsError:
        pass
    try:
        fd = os.open(path, flags | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise RunDirError(
            f"{str(path)!r} is a symbolic link; lorazoo never writes through one: remove it (or pick another "
            "hydra.run.dir)"
        ) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(info.st_mode) else f"a file with {info.st_nlink} hard links"
        raise RunDirError(f"{str(path)!r} is {what}; valid: lorazoo's own lock file (remove it, or pick another dir)")
    return fd, False


def _lock(directory: Path) -> tuple[int, bool]:
    """An exclusive non-blocking flock on ``<dir>/.lorazoo.lock``; a held lock fails at once."""
    path = directory / LOCK_FILE
    fd, created = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise RunDirError(
                f"run dir {str(directory)!r} is in use by another lorazoo run ({holder}); wait for it "
                "to finish or pick another hydra.run.dir"
            ) from None
        raise
    return fd, created


def in_use(directory: Path) -> bool:
    """Whether a live lorazoo run holds ``directory``'s lock now (it may still be writing its files); a lock
    file left by a finished or killed run is not held. Read-only: never creates or changes the lock."""
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
    finally:
        os.close(fd)  # closing drops the shared lock taken just to test
    return False


def _outputs(directory: Path) -> list[str]:
    """Entries that are some run's output: everything but the lock, Hydra's folders, logs, lorazoo_run.json and
    the metrics.json of a run that failed during setup (it trained nothing; run_record.write_failure)."""
    return sorted(
        p.name
        for p in directory.iterdir()
        if p.name not in _HARMLESS
        and p.name != RUN_FILE
        and not p.name.endswith(".log")
        and not (p.name == METRICS_FILE and _setup_failure(p))
    )


def _foreign(directory: Path) -> list[str]:
    """Entries of a directory without lorazoo_run.json that lorazoo did not write: everything but our lock, the
    current Hydra job's log and the metrics.json of a setup failure (another app's .hydra/ or log is foreign)."""
    own = {LOCK_FILE, *_hydra_job_log()}
    return sorted(
        p.name for p in directory.iterdir() if p.name not in own and not (p.name == METRICS_FILE and _setup_failure(p))
    )


def _hydra_job_log() -> list[str]:
    """The log file Hydra opened in the job dir for this job before lorazoo runs (none outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    return [f"{HydraConfig.get().job.name}.log"] if HydraConfig.initialized() else []


def artifact_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file under the run's adapter/ (relative paths): recorded in the completed metrics.json."""
    root = directory / ADAPTER_DIR
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    return {str(p.relative_to(directory)): file_sha256(p) for p in files}


def artifact_problems(directory: Path, metrics: dict[str, Any]) -> list[str]:
    """What of a completed run's recorded artifacts is missing or changed (a record from before artifacts were
    hashed: its adapter files must at least exist)."""
    recorded = metrics.get("artifacts")
    if not isinstance(recorded, dict):
        recorded = {f"{ADAPTER_DIR}/{name}": None for name in ("adapter_config.json", "adapter.safetensors")}
    problems = []
    for name, digest in sorted(recorded.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif digest is not None and file_sha256(path) != digest:
            problems.append(f"{name} changed since the run completed")
    return problems


def _setup_failure(path: Path) -> bool:
    record = read_json(path)
    if not record:
        return False
    return record.get("status") == "failed" and record.get("failed_stage") == "setup"


@contextlib.contextmanager
def claimed(
    directory: str | Path, plain_cfg: dict[str, Any], resume: bool, shown_cfg: dict[str, Any] | None = None
) -> Iterator[Claim]:
    """``claim`` as a context manager: the lock is released when the job ends, however it ends."""
    held = claim(directory, plain_cfg, resume, shown_cfg)
    try:
        yield held
    finally:
        held.release()


def claim(
    directory: str | Path, plain_cfg: dict[str, Any], resume: bool, shown_cfg: dict[str, Any] | None = None
) -> Claim:
    """Lock ``directory`` and decide whether this run may use it; raises RunDirError naming the way out.
    The fingerprint hashes ``plain_cfg``; lorazoo_run.json records ``shown_cfg`` (train/recorded.py: an
    ``${oc.env:...}`` as written) when given.

    Only rank 0 of a distributed job calls this; the other ranks get its Claim (distributed.decided_on_rank_zero)."""
    directory = Path(directory).resolve()
    ident = identity(plain_cfg)
    fp = fingerprint(ident)
    ident = identity(shown_cfg) if shown_cfg is not None else ident
    directory.mkdir(parents=True, exist_ok=True)
    fd, created = _lock(directory)
    try:
        done = _check_owner(directory, ident, fp, resume)
    except BaseException:
        os.close(fd)
        if created:  # leave a refused directory exactly as it was
            (directory / LOCK_FILE).unlink(missing_ok=True)
        raise
    if done is None:  # this run will write here: say who holds the lock
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode())
    return Claim(directory, fp, ident, completed=done, resume=resume, _fd=fd)


def _check_owner(directory: Path, ident: dict[str, Any], fp: str, resume: bool) -> dict[str, Any] | None:
    """None when the run may (re)start here; the earlier metrics record when it already completed."""
    pick = "pick another hydra.run.dir (or delete this one)"
    record = read_json(directory / RUN_FILE)
    if record is None:
        if (directory / RUN_FILE).exists():
            raise RunDirError(f"{str(directory / RUN_FILE)!r} is unreadable; {pick}")
        foreign = _foreign(directory)
        if foreign:
            raise RunDirError(
                f"run dir {str(directory)!r} is not empty and holds no lorazoo run (found {foreign[:5]}); {pick}"
            )
        return None
    if record.get("fingerprint") != fp:
        if not _outputs(directory):
            return None  # that attempt stopped before it wrote anything (a bad model path, say): nothing to lose
        diff = first_difference(record.get("identity") or {}, ident)
        if diff == NO_DIFFERENCE:  # equal as recorded: a value read by ${oc.env:...} differs
            diff = "a value read from the environment by ${oc.env:...}"
        raise RunDirError(
            f"run dir {str(directory)!r} holds another run (first differing key {diff}); {pick}, "
            "or restore that setting to resume it"
        )
    metrics = read_json(directory / METRICS_FILE)
    if metrics and metrics.get("status") == "completed" and metrics.get("fingerprint") == fp:
        problems = artifact_problems(directory, metrics)
        if not problems:
            return metrics
        if resume and complete_checkpoints(directory / "checkpoints"):
            return None  # asked for: the last checkpoint rebuilds the adapter and the record
        redo = (
            "add trainer.resume=true to rebuild them from its last checkpoint, or "
            if complete_checkpoints(directory / "checkpoints")
            else ""
        )
        raise RunDirError(
            f"run dir {str(directory)!r} holds a completed run of this config but not its artifacts "
            f"({'; '.join(problems[:3])}), so it is not reused; {redo}{pick}"
        )
    if complete_checkpoints(directory / "checkpoints") and not resume:
        raise RunDirError(
            f"run dir {str(directory)!r} holds an unfinished run of this config; add trainer.resume=true "
            f"to continue it, or {pick}"
        )
    return None


def save_hydra_files(directory: Path, cfg: Any) -> None:
    """Write ``.hydra/{config,hydra,overrides}.yaml`` as Hydra would, but only once this run owns the dir.

    configs/config.yaml sets ``hydra.output_subdir: null`` so Hydra itself writes nothing before the
    ownership check: a refused launch leaves an earlier run's .hydra/ byte-identical."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf

    # the full config (hydra node included), not the HydraConf its annotation claims
    hydra_cfg = cast("DictConfig | None", HydraConfig.instance().cfg)
    if hydra_cfg is None:
        return
    folder = directory / ".hydra"
    folder.mkdir(exist_ok=True)
    for name, node in (
        ("config.yaml", cfg),
        ("hydra.yaml", hydra_cfg),
        ("overrides.yaml", hydra_cfg.hydra.overrides.task),
    ):
        OmegaConf.save(node, folder / name)
