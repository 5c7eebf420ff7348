"""``copy.deepcopy`` of an adapted model (TRL's reference model, EMA copies) is an independent working model."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import PROJECTION_CASES, perturb, tiny_llama

from lorazoo import AdapterConfig, attach

IDS = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("projection", ["lora", "vera", "vblora"])
def test_a_deep_copy_runs_trains_and_unloads_on_its_own(projection):
    model = attach(
        tiny_llama(0),
        AdapterConfig(
            projection=projection, rank=4, target_modules="all-linear", projection_kwargs=PROJECTION_CASES[projection]
        ),
    )
    perturb(model)
    with torch.no_grad():
        expected = model(input_ids=IDS).logits
    twin = copy.deepcopy(model)
    with torch.no_grad():
        assert torch.equal(twin(input_ids=IDS).logits, expected)
        perturb(twin, seed=11)  # the copy's adapter moves: its outputs follow, the original's do not
        moved = twin(input_ids=IDS).logits
        assert not torch.allclose(moved, expected)
        assert torch.equal(model(input_ids=IDS).logits, expected)
    twin(input_ids=IDS).logits.square().mean().backward()
    assert all(p.grad is not None for p in twin.projection.trainable_parameters())
    assert all(p.grad is None for p in model.projection.trainable_parameters())
    plain = twin.merge_and_unload()  # removes the copy's hooks only
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=IDS).logits, moved, atol=1e-5, rtol=1e-4)
        perturb(model, seed=12)
        assert not torch.allclose(model(input_ids=IDS).logits, expected)  # the original still refreshes θ_D
