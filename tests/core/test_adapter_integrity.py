"""Adapter files you can trust: what a file declares is checked before anything is built, the
structures regenerated from its seed must be the ones it was trained with, tensors must be finite floats,
a failed load leaves the model exactly as before, and merged/training states are respected."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from helpers import model_inputs, perturb, tiny_bert
from safetensors.torch import load_file, save_file

from lorazoo import AdapterConfig, attach, load_adapter
from lorazoo.errors import AdapterFileError, AdapterStateError

SEEDED = {  # projections whose ΔW depends on structures regenerated from the seed (not stored)
    "vera": {},
    "unilora": {"d": 64},
    "tied": {"train": ["u", "v"]},  # A, B frozen: regenerated from the seed
    "gaussian": {"d": 48},
    "fastfood": {"d": 48},
}


def saved(tmp_path: Path, projection: str = "unilora", num_labels: int = 2, **kwargs) -> Path:
    cfg = AdapterConfig(
        projection=projection,
        rank=4,
        seed=3,
        projection_kwargs=kwargs or dict(SEEDED.get(projection, {})),
        modules_to_save=["classifier"],
    )
    model = attach(tiny_bert(num_labels=num_labels), cfg)
    perturb(model)
    return model.save_adapter(tmp_path / f"{projection}-{num_labels}")


def edit(path: Path, change) -> None:
    raw = json.loads((path / "adapter_config.json").read_text())
    change(raw)
    (path / "adapter_config.json").write_text(json.dumps(raw))


def rewrite_tensor(path: Path, key: str, change) -> None:
    tensors = load_file(str(path / "adapter.safetensors"))
    tensors[key] = change(tensors[key])
    save_file(tensors, str(path / "adapter.safetensors"), metadata={"format": "lorazoo-adapter"})
    edit(
        path,
        lambda raw: raw["checksums"]["tensors"].__setitem__(
            key, {"dtype": str(tensors[key].dtype).removeprefix("torch."), "shape": list(tensors[key].shape)}
        ),
    )


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ============================================================================ regenerated structures
@pytest.mark.parametrize("projection", sorted(SEEDED))
def test_edited_seed_is_refused_naming_it(tmp_path: Path, projection: str):
    path = saved(tmp_path, projection)
    edit(path, lambda raw: raw["config"].__setitem__("seed", 4))
    with pytest.raises(
        AdapterFileError,
        match=r"differs from the config saved with the weights \(seed: trained with 3, the config now says 4\)",
    ):
        load_adapter(tiny_bert(), path)


def test_edited_unilora_share_is_refused_naming_it(tmp_path: Path):
    path = saved(tmp_path, "unilora", d=64, share="global")
    edit(path, lambda raw: raw["config"]["projection_kwargs"].__setitem__("share", "local"))
    with pytest.raises(AdapterFileError, match=r"\(share: trained with 'global', the config now says 'local'\)"):
        load_adapter(tiny_bert(), path)


def test_structures_from_another_generator_version_are_refused(tmp_path: Path):
    """As an adapter made by a lorazoo whose generator differed: its recorded structures are not today's."""
    path = saved(tmp_path, "vera")

    def older(raw: dict) -> None:
        raw["checksums"]["generator_version"] = 0
        for entry in raw["checksums"]["structures"].values():
            entry["sample"] = [v + 0.5 for v in entry["sample"]]

    edit(path, older)
    with pytest.raises(AdapterFileError, match=r"generator version: saved with 0, this lorazoo regenerates with 1"):
        load_adapter(tiny_bert(), path)


def test_unchanged_structures_load_bit_exactly(tmp_path: Path):
    """No false alarms: the package version string alone does not change ΔW, so it does not block loading."""
    path = saved(tmp_path, "vera")
    reference = load_adapter(tiny_bert(), path).eval()
    edit(path, lambda raw: raw.__setitem__("lorazoo_version", "0.0.1"))
    model = load_adapter(tiny_bert(), path).eval()
    with torch.no_grad():
        assert torch.equal(model(**model_inputs("bert")).logits, reference(**model_inputs("bert")).logits)


# ============================================================================ tensor checks
@pytest.mark.parametrize(
    "key,value,match",
    [
        (
            "projection.theta",
            float("nan"),
            r"tensor 'projection\.theta' holds 1 NaN/inf value\(s\); valid: finite values only",
        ),
        (
            "modules_to_save.classifier/weight",
            float("inf"),
            r"tensor 'modules_to_save\.classifier/weight' holds 1 NaN/inf",
        ),
    ],
)
def test_non_finite_tensors_are_refused(tmp_path: Path, key: str, value: float, match: str):
    path = saved(tmp_path, "unilora")

    def poison(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        t.view(-1)[0] = value
        return t

    rewrite_tensor(path, key, poison)
    with pytest.raises(AdapterFileError, match=match):
        load_adapter(tiny_bert(), path)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
@pytest.mark.parametrize("key", ["projection.theta", "modules_to_save.classifier/bias"])
def test_integer_and_bool_tensors_are_refused(tmp_path: Path, key: str, dtype: torch.dtype):
    path = saved(tmp_path, "unilora")
    rewrite_tensor(path, key, lambda t: (t * 1000).to(dtype))
    with pytest.raises(
        AdapterFileError,
        match=rf"tensor '{key.replace('.', '[.]')}' has dtype torch\.{str(dtype)[6:]}; valid: a floating dtype",
    ):
        load_adapter(tiny_bert(), path)


def test_tensor_not_matching_the_header_record_is_refused(tmp_path: Path):
    path = saved(tmp_path, "lora")
    tensors = load_file(str(path / "adapter.safetensors"))
    tensors["projection.theta"] = tensors["projection.theta"][:-1].clone()
    save_file(tensors, str(path / "adapter.safetensors"))
    with pytest.raises(
        AdapterFileError, match=r"tensor 'projection\.theta' is float32\[\d+\] in the weights file but was saved as"
    ):
        load_adapter(tiny_bert(), path)


@pytest.mark.parametrize("where", ["config", "config and layout"])
def test_huge_declared_rank_fails_before_allocating(tmp_path: Path, monkeypatch, where: str):
    """rank 10^6 in adapter_config.json: refused from JSON + the safetensors header, in milliseconds."""
    import lorazoo.adapter_dir as adapter_dir  # where a saved adapter is read, checked and built

    path = saved(tmp_path, "lora")

    def huge(raw: dict) -> None:
        raw["config"]["rank"] = 10**6
        if where != "config":
            for entry in raw["layout"]:
                entry["rank"] = 10**6

    edit(path, huge)
    monkeypatch.setattr(adapter_dir, "build_projection", lambda *a, **k: pytest.fail("a projection was built first"))
    started = time.perf_counter()
    match = "config declares rank=1000000 but module" if where == "config" else "invalid config or layout: layout entry"
    with pytest.raises(AdapterFileError, match=match):
        load_adapter(tiny_bert(), path)
    assert time.perf_counter() - started < 1.0


def test_deeply_nested_adapter_config_is_one_line(tmp_path: Path):
    path = saved(tmp_path, "lora")
    edit(path, lambda raw: raw["config"].__setitem__("projection_kwargs", {}))
    text = (path / "adapter_config.json").read_text()
    (path / "adapter_config.json").write_text(
        text.replace('"projection_kwargs": {}', '"projection_kwargs": ' + "[" * 3000 + "]" * 3000)
    )
    with pytest.raises(
        AdapterFileError, match=r"adapter_config\.json: JSON nested 300\d levels deep; valid: at most 64"
    ):
        load_adapter(tiny_bert(), path)


# ============================================================================ all or nothing
def test_failed_load_leaves_the_model_as_before_and_a_retry_works(tmp_path: Path):
    """A head for 3 labels into a 2-label model: refused; same modules, same tensors, no half-made adapter."""
    model = attach(tiny_bert(), AdapterConfig(projection="lora", rank=4, modules_to_save=["classifier"]))
    perturb(model)
    before, modules = state(model), [n for n, _ in model.named_modules()]
    with torch.no_grad():
        logits = model(**model_inputs("bert")).logits
    wrong = saved(tmp_path, "vera", num_labels=3)
    with pytest.raises(
        AdapterFileError, match=r"classifier/(bias|weight) has shape \(3,( 32)?\); this base model's is \(2,( 32)?\)"
    ):
        model.load_adapter(wrong, "other")
    after = state(model)
    assert list(model.adapters) == ["default"] and [n for n, _ in model.named_modules()] == modules
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        assert torch.equal(model(**model_inputs("bert")).logits, logits)
    model.load_adapter(saved(tmp_path, "vera"), "other")  # the retry under the same name works
    model.set_adapter("other")
    reference = load_adapter(tiny_bert(), tmp_path / "vera-2")
    with torch.no_grad():
        assert torch.equal(model(**model_inputs("bert")).logits, reference(**model_inputs("bert")).logits)


def test_failed_load_into_a_plain_base_leaves_it_untouched(tmp_path: Path):
    base = tiny_bert()
    before, modules = state(base), [n for n, _ in base.named_modules()]
    with pytest.raises(AdapterFileError):
        load_adapter(base, saved(tmp_path, "unilora", num_labels=3))
    assert [n for n, _ in base.named_modules()] == modules
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())


# ============================================================================ lifecycle guards
def test_loading_weights_into_a_merged_adapter_keeps_the_base_exact(tmp_path: Path):
    """load_adapter_weights while merged = unmerge → load → re-merge; unmerge() then restores W exactly as before."""
    cfg = AdapterConfig(projection="lora", rank=4, modules_to_save=["classifier"])
    model = attach(tiny_bert(), cfg)
    perturb(model)
    original = {
        n: layer.base_layer.weight.detach().clone()
        for n, layer in ((layer.module_name, layer) for layer in model.adapted_layers())
    }
    other = attach(tiny_bert(), cfg)
    perturb(other, seed=11)
    path = other.save_adapter(tmp_path / "other")
    model.merge()
    model.load_adapter_weights(path)
    assert model.merged_adapter == "default"
    with torch.no_grad():
        merged_logits = model(**model_inputs("bert")).logits
        expected = load_adapter(tiny_bert(), path).eval()(**model_inputs("bert")).logits
    torch.testing.assert_close(merged_logits, expected, atol=1e-5, rtol=1e-5)
    model.unmerge()
    for layer in model.adapted_layers():
        torch.testing.assert_close(layer.base_layer.weight, original[layer.module_name], atol=1e-6, rtol=0)


def test_set_adapter_during_training_is_refused(tmp_path: Path):
    from lorazoo.train.engine.trainer import LoraZooTrainer

    model = attach(tiny_bert(), AdapterConfig(projection="lora", rank=4, modules_to_save=["classifier"]))
    model.add_adapter("other", AdapterConfig(projection="lora", rank=4, modules_to_save=["classifier"]))
    seen = []

    def switches(self, *args, **kwargs):
        with pytest.raises(
            AdapterStateError, match=r"set_adapter\('other'\) during LoraZooTrainer\.train\(\) is refused"
        ):
            self.model.set_adapter("other")
        seen.append(self.model.active_adapter)
        return {}

    with model.training_guard():
        with pytest.raises(AdapterStateError, match="merge\\(\\) during LoraZooTrainer.train\\(\\) is refused"):
            model.merge()
    original = LoraZooTrainer.__mro__[1].train
    try:
        LoraZooTrainer.__mro__[1].train = switches  # Trainer.train, as LoraZooTrainer.train calls it
        trainer = LoraZooTrainer.__new__(LoraZooTrainer)
        trainer.model = model
        trainer.accelerator = type("A", (), {"unwrap_model": staticmethod(lambda m, keep_torch_compile=False: m)})()
        LoraZooTrainer.train(trainer)
    finally:
        LoraZooTrainer.__mro__[1].train = original
    assert seen == ["default"]
    model.set_adapter("other")  # after training, switching works again
    assert model.active_adapter == "other"
