"""``trainer.torch_compile=true`` is Trainer's own torch.compile: the model really is compiled (dynamo
captured graphs), with the same losses and adapter as eager over a few steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.parallel import NO_DROPOUT, step_losses, train_in_process
from safetensors.torch import load_file


@pytest.mark.slow
def test_torch_compile_trains_like_eager(tmp_path: Path):
    args = [
        "model=tiny_bert",
        "projection=unilora",
        "projection.kwargs.d=64",
        "task.max_train_samples=32",
        "task.max_eval_samples=8",
        "task.max_length=16",
        *NO_DROPOUT,
    ]
    eager = train_in_process(tmp_path / "eager", *args, "trainer.batch_size=8")
    # aot_eager: Trainer's compile wrapping and AOTAutograd's traced backward, without inductor's C++ build
    # (a minute on 2 cores; inductor's own codegen is torch's to test). The default backend stays inductor.
    from torch._dynamo.utils import counters

    counters.clear()
    compiled = train_in_process(
        tmp_path / "compiled",
        *args,
        "trainer.batch_size=8",
        "trainer.torch_compile=true",
        "trainer.torch_compile_backend=aot_eager",
    )
    assert compiled["status"] == "completed" and len(step_losses(tmp_path / "compiled")) == 3
    assert counters["stats"]["unique_graphs"] > 0  # dynamo traced the forward: not an eager run by another name
    assert step_losses(tmp_path / "eager") == pytest.approx(step_losses(tmp_path / "compiled"), abs=1e-5)
    assert eager["metrics"]["loss"] == pytest.approx(compiled["metrics"]["loss"], abs=1e-5)
    a = load_file(str(tmp_path / "eager" / "adapter" / "adapter.safetensors"))
    b = load_file(str(tmp_path / "compiled" / "adapter" / "adapter.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5, rtol=0) for k in a)
