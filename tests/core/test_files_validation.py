"""Adapter files validated before allocation: every AdapterConfig field is covered by the
integrity record, an adapter without the record is refused (``"hand_written": true`` opts out), and the
safetensors header is parsed with bounded sizes and checked against the record and the base before any tensor
is read, so a header declaring a 1 GiB tensor never allocates it."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import REPO_ROOT, model_inputs, perturb, tiny_bert
from safetensors.torch import load_file

import lorazoo
from lorazoo import AdapterConfig, attach, load_adapter
from lorazoo import files as zio
from lorazoo.errors import AdapterFileError, LoraZooError

# a valid value different from the saved one, for every AdapterConfig field: the generated test below fails
# when a field is added to AdapterConfig without a value here (so a new field cannot escape the record)
EDITS = {
    "projection": "tied",
    "rank": 2,
    "target_modules": ["query"],
    "alpha": 7.0,
    "dropout": 0.25,
    "seed": 9,
    "projection_kwargs": {"d": 32, "share": "global"},
    "modules_to_save": [],
    "base_model_name_or_path": "another/base",
}


def saved(tmp_path: Path) -> Path:
    cfg = AdapterConfig(
        projection="unilora", rank=4, seed=3, projection_kwargs={"d": 64}, modules_to_save=["classifier"]
    )
    model = attach(tiny_bert(), cfg)
    perturb(model)
    return model.save_adapter(tmp_path / "adapter")


def edit(path: Path, change) -> None:
    raw = json.loads((path / zio.CONFIG_NAME).read_text())
    change(raw)
    (path / zio.CONFIG_NAME).write_text(json.dumps(raw))


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_every_config_field_has_an_edit_case():
    assert set(EDITS) == {f.name for f in dataclasses.fields(AdapterConfig)}


@pytest.mark.parametrize("field", sorted(EDITS))
def test_every_edited_config_field_is_refused_naming_it(tmp_path: Path, field: str):
    path = saved(tmp_path)
    edit(path, lambda raw: raw["config"].__setitem__(field, EDITS[field]))
    with pytest.raises(AdapterFileError) as exc:
        load_adapter(tiny_bert(), path)
    named = (f"({field}: trained with", "(d: trained with 64", "config declares rank=2")
    assert any(part in one_line(exc) for part in named), str(exc.value)


INFO_EDITS = {"num_labels": 3, "base_model_class": "BertModel", "num_parameters": 12345}


@pytest.mark.parametrize("key", sorted(INFO_EDITS))
def test_every_edited_key_beside_the_config_is_refused_naming_it(tmp_path: Path, key: str):
    """The keys written beside the config (export rebuilds the base from them) are in the record too."""
    path = saved(tmp_path)
    assert key in json.loads((path / zio.CONFIG_NAME).read_text())
    edit(path, lambda raw: raw.__setitem__(key, INFO_EDITS[key]))
    with pytest.raises(AdapterFileError, match=rf": {key} was saved as .* but the file now says") as exc:
        load_adapter(tiny_bert(), path)
    one_line(exc)


def test_record_without_its_config_entry_is_refused(tmp_path: Path):
    path = saved(tmp_path)
    edit(path, lambda raw: raw["checksums"].pop("config"))
    with pytest.raises(AdapterFileError, match="the integrity record has no 'config' entry") as exc:
        load_adapter(tiny_bert(), path)
    assert '"hand_written": true' in one_line(exc)


@pytest.mark.parametrize("change", ["deleted", "null", "list"])
def test_adapter_without_its_record_is_refused_naming_the_opt_out(tmp_path: Path, change: str):
    path = saved(tmp_path)
    edit(
        path,
        lambda raw: (
            raw.pop("checksums") if change == "deleted" else raw.update(checksums=None if change == "null" else [])
        ),
    )
    with pytest.raises(AdapterFileError, match=r"has no integrity record \('checksums'\)") as exc:
        load_adapter(tiny_bert(), path)
    assert '"hand_written": true' in one_line(exc)


def test_hand_written_opt_out_loads_the_same_adapter(tmp_path: Path):
    path = saved(tmp_path)
    reference = load_adapter(tiny_bert(), path).eval()
    edit(path, lambda raw: (raw.pop("checksums"), raw.__setitem__(zio.HAND_WRITTEN, True)))
    model = load_adapter(tiny_bert(), path).eval()
    with torch.no_grad():
        assert torch.equal(model(**model_inputs("bert")).logits, reference(**model_inputs("bert")).logits)


# ============================================================================ the safetensors header
def write_header(path: Path, header: dict, data_bytes: int, length: int | None = None) -> None:
    """adapter.safetensors with this header and a sparse data section of ``data_bytes`` (nothing written)."""
    text = json.dumps(header).encode()
    with open(path / zio.WEIGHTS_NAME, "wb") as fh:
        fh.write((len(text) if length is None else length).to_bytes(8, "little"))
        fh.write(text)
        fh.truncate(8 + len(text) + data_bytes)


GIB = 1 << 30
BOMB = {"projection.theta": {"dtype": "F32", "shape": [GIB // 4], "data_offsets": [0, GIB]}}
MALFORMED = {
    "dtype": {"projection.theta": {"dtype": "F128", "shape": [4], "data_offsets": [0, 16]}},
    "negative shape": {"projection.theta": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}},
    "float shape": {"projection.theta": {"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]}},
    "offsets short": {"projection.theta": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}},
    "offsets beyond the file": {"projection.theta": {"dtype": "F32", "shape": [64], "data_offsets": [0, 256]}},
    "no offsets": {"projection.theta": {"dtype": "F32", "shape": [4]}},
    "entry not an object": {"projection.theta": [1, 2]},
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_header_entries_are_one_line(tmp_path: Path, case: str):
    path = saved(tmp_path)
    write_header(path, MALFORMED[case], data_bytes=16)
    with pytest.raises(AdapterFileError, match=r"tensor 'projection\.theta'") as exc:
        load_adapter(tiny_bert(), path)
    one_line(exc)


@pytest.mark.parametrize("length", [1 << 40, 1 << 63, 17 * 1024 * 1024])
def test_header_length_is_bounded_before_it_is_read(tmp_path: Path, length: int):
    path = saved(tmp_path)
    write_header(path, BOMB, data_bytes=32 * 1024 * 1024, length=length)
    with pytest.raises(AdapterFileError, match=rf"declares a {length}-byte header") as exc:
        load_adapter(tiny_bert(), path)
    one_line(exc)


def test_tensors_beyond_free_memory_are_refused_before_reading(tmp_path: Path, monkeypatch):
    import lorazoo.integrity as integrity

    path = saved(tmp_path)
    monkeypatch.setattr(integrity.os, "sysconf", lambda name: 16 if name == "SC_AVPHYS_PAGES" else 4)
    monkeypatch.setattr(zio, "read_adapter_tensors", lambda *a: pytest.fail("tensors were read"))
    with pytest.raises(AdapterFileError, match=r"GiB but this machine has 0\.0 GiB free") as exc:
        load_adapter(tiny_bert(), path)
    one_line(exc)


def test_saved_head_of_another_shape_is_refused_before_reading_tensors(tmp_path: Path, monkeypatch):
    path = saved(tmp_path)
    monkeypatch.setattr(zio, "read_adapter_tensors", lambda *a: pytest.fail("tensors were read"))
    with pytest.raises(AdapterFileError, match=r"saved head tensor classifier/\w+ has shape \(2"):
        load_adapter(tiny_bert(num_labels=3), path)


BOMB_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    sys.path.insert(0, sys.argv[1])
    from helpers import tiny_bert
    from lorazoo import load_adapter
    from lorazoo.errors import LoraZooError
    base = tiny_bert()
    for path in sys.argv[2:]:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_adapter(base, path)
            message = None
        except LoraZooError as exc:
            message = str(exc)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(json.dumps({"path": path, "grown_kib": grown, "message": message}))
    """
)
BOMB_VARIANTS = ("record deleted", "record kept", "file not extended")


def test_header_bomb_is_refused_with_low_peak_memory(tmp_path: Path):
    """A small sparse adapter.safetensors whose header declares a 1 GiB tensor (with and without the integrity
    record, in a file extended to 1 GiB or not): refused in one line, and the peak memory of a fresh child
    process grows by far less than the tensor."""
    paths = []
    for variant in BOMB_VARIANTS:
        path = saved(tmp_path / variant.replace(" ", "-"))
        if variant == "record deleted":
            edit(path, lambda raw: raw.pop("checksums"))
        write_header(path, BOMB, data_bytes=16 if variant == "file not extended" else GIB)
        assert os.stat(path / zio.WEIGHTS_NAME).st_blocks * 512 < 1 << 20  # sparse: nothing written to disk
        paths.append(str(path))
    done = subprocess.run(
        [sys.executable, "-c", BOMB_CHILD, str(REPO_ROOT / "tests"), *paths],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(lorazoo.__file__).parents[1])},  # the lorazoo under test
    )
    results = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert len(results) == len(BOMB_VARIANTS), done.stderr[-2000:]
    for variant, result in zip(BOMB_VARIANTS, results):
        assert result["message"] and "\n" not in result["message"], (variant, result)
        assert result["grown_kib"] < 200 * 1024, (variant, result)


def test_a_saved_adapter_still_loads_exactly(tmp_path: Path):
    """No false alarms from the new checks: save, load, same outputs and tensors."""
    path = saved(tmp_path)
    model = load_adapter(tiny_bert(), path)
    for key, value in load_file(str(path / zio.WEIGHTS_NAME)).items():
        assert torch.equal(model.adapter_tensors()[key], value)
    assert isinstance(AdapterFileError("x"), LoraZooError)
