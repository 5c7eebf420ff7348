"""lorazoo's own checkpoints: marked ``checkpoint_writing`` before and ``checkpoint_complete`` after.

Only folders carrying one of these marks are ever deleted (an interrupted one on resume, old complete ones
by rotation); a ``checkpoint-N`` folder without them (a plain HF checkpoint, a copy) is foreign: left alone
and reported. On resume the newest complete checkpoint of this run is used; if it turns out unreadable the
previous one is, and the run says so.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from lorazoo.errors import LoraZooError
from lorazoo.train.errors import RunDirError
from lorazoo.train.records.config_diff import first_difference, flatten

WRITING_MARKER = "checkpoint_writing"
COMPLETE_MARKER = "checkpoint_complete"  # written last: a checkpoint without it was interrupted
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _step(path: Path) -> int | None:
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def kind(folder: Path) -> str:
    """``complete``, ``writing`` (ours, interrupted) or ``foreign`` (no lorazoo mark)."""
    if (folder / COMPLETE_MARKER).is_file():
        return "complete"
    return "writing" if (folder / WRITING_MARKER).is_file() else "foreign"


def _folders(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    return sorted((s, p) for p in directory.iterdir() if (s := _step(p)) is not None)


def complete_checkpoints(directory: str | Path) -> list[Path]:
    """lorazoo's complete checkpoints under ``directory``, oldest first."""
    return [p for _, p in _folders(Path(directory)) if kind(p) == "complete"]


def foreign_checkpoints(directory: str | Path) -> list[Path]:
    return [p for _, p in _folders(Path(directory)) if kind(p) == "foreign"]


def marker_fingerprint(folder: Path) -> str | None:
    """The run fingerprint a complete marker records (None for markers written before fingerprints)."""
    try:
        data = json.loads((folder / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data.get("fingerprint") if isinstance(data, dict) else None


def mark_writing(folder: Path, fingerprint: str | None) -> None:
    """Claim ``folder`` before Trainer writes into it; refuse to write into a foreign folder."""
    if folder.exists() and kind(folder) == "foreign":
        raise RunDirError(
            f"{str(folder)!r} exists and was not written by lorazoo; it is left alone: move it "
            "away and resume with trainer.resume=true"
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / COMPLETE_MARKER).unlink(missing_ok=True)
    (folder / WRITING_MARKER).write_text(json.dumps({"fingerprint": fingerprint}) + "\n")


def mark_complete(folder: Path, step: int, fingerprint: str | None) -> None:
    from lorazoo.files import atomic_write_json

    atomic_write_json(folder / COMPLETE_MARKER, {"step": step, "fingerprint": fingerprint})
    (folder / WRITING_MARKER).unlink(missing_ok=True)


def rotate(directory: Path, keep: int | None, protect: str | None = None) -> None:
    """Delete the oldest complete lorazoo checkpoints beyond ``keep``; never anything else, and never
    ``protect`` (the best evaluated checkpoint, which Trainer may load at the end)."""
    if keep is None:
        return
    complete = complete_checkpoints(directory)
    kept = Path(protect).resolve() if protect else None
    for folder in complete[: max(0, len(complete) - keep)]:
        if folder.resolve() != kept:
            shutil.rmtree(folder)


def _readable(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from, or None when it can."""
    from lorazoo.files import read_adapter_config, read_adapter_tensors

    try:
        read_adapter_config(folder)
        read_adapter_tensors(folder)
    except LoraZooError as exc:
        return str(exc)
    if not (folder / "trainer_state.json").is_file():
        return "trainer_state.json is missing"
    return None


def pickle_problem(folder: Path) -> str | None:
    """Why a pickled file Trainer loads on resume (optimizer.pt, scheduler.pt, rng_state*.pth ...) is unreadable,
    or None. Each is loaded first with torch's restricted unpickler (numpy allow-listed, as Trainer does): a file
    that would need to run code raises a one-line RunDirError naming it (never a hint to lift the restriction)."""
    import torch
    from transformers.trainer_pt_utils import safe_globals

    for path in sorted(p for p in folder.iterdir() if p.suffix in (".pt", ".pth") and p.is_file()):
        try:
            with safe_globals():
                torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle.UnpicklingError (named, not imported: src/ imports no pickle)
            if type(exc).__name__ == "UnpicklingError":
                raise RunDirError(
                    f"checkpoint file {str(path)!r} holds objects other than tensors and plain data, so it is never "
                    f"loaded; delete {folder.name} to resume from an earlier checkpoint, or pick another "
                    "hydra.run.dir"
                ) from None
            return f"{path.name} is truncated or corrupt ({type(exc).__name__})"
    return None


def _config_difference(folder: Path, expected: dict[str, Any]) -> str | None:
    """The first AdapterConfig key where the checkpoint's adapter differs from this run's, if any."""
    try:
        saved = json.loads((folder / "adapter_config.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: _readable reports it
    old, new = flatten(saved), flatten(expected)
    return first_difference(old, new) if old != new else None


def resume_point(directory: str | Path, fingerprint: str | None, adapter_config: dict[str, Any] | None) -> str | None:
    """The checkpoint to resume from: interrupted lorazoo folders removed, foreign ones reported and kept,
    a checkpoint of another run refused, an unreadable newest one skipped for the previous one."""
    directory = Path(directory)
    for _, folder in _folders(directory):
        if kind(folder) == "writing":
            print(f"[lorazoo] removing interrupted checkpoint {folder}", file=sys.stderr)
            shutil.rmtree(folder)
    for folder in foreign_checkpoints(directory):
        print(f"[lorazoo] {folder} has no lorazoo checkpoint mark: left alone, not used", file=sys.stderr)
    skipped: list[str] = []
    for folder in reversed(complete_checkpoints(directory)):
        saved = marker_fingerprint(folder)
        diff = _config_difference(folder, adapter_config) if adapter_config is not None else None
        if (saved is not None and fingerprint is not None and saved != fingerprint) or diff:
            raise RunDirError(
                f"checkpoint {str(folder)!r} belongs to another run ({diff or f'fingerprint {saved}'} "
                "differs); resume only with the settings it was trained with, or pick another hydra.run.dir"
            )
        problem = _readable(folder) or pickle_problem(folder)
        if problem is None:
            if skipped:
                print(f"[lorazoo] falling back to {folder.name}: {'; '.join(skipped)}", file=sys.stderr)
            return str(folder)
        skipped.append(f"{folder.name} is unreadable ({problem})")
    if skipped:
        raise RunDirError(f"no readable checkpoint in {str(directory)!r}: {'; '.join(skipped)}")
    return None
