"""The adapter lifecycle as a state machine (model.py, "lifecycle states"; README failure table).

An AdaptedModel is live or unloaded (after ``merge_and_unload``, for good). While live it has an active
adapter or none, that adapter merged or not, and is disabled to some nesting depth; every adapter layer
runs in the train/eval mode of the module it wraps. ``LifecycleMachine`` (hypothesis
``RuleBasedStateMachine``) runs random sequences of the public lifecycle calls on a tiny BERT and after
every step compares the output with a plain copy of the base whose weights get each adapter's ΔW added by
hand (from the projection's θ_D sliced by the layout), and checks that a call the tracked state forbids
raises a one-line AdapterStateError naming that state while leaving the outputs as they were. The
parametrised tests after it pin the cases an outside pass reported, across every projection.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import PROJECTION_CASES, model_inputs, tiny_bert
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from torch import nn

from lorazoo import AdapterConfig, attach, load_adapter, projection_names
from lorazoo.adapted_layers import AdaptedLayer
from lorazoo.errors import AdapterStateError
from lorazoo.targets import ModuleCopies

NAMES = st.sampled_from(["a", "b", "c"])
MACHINE_PROJECTIONS = st.sampled_from(["lora", "prolora", "vera", "unilora"])  # prolora carries dropout
INPUTS = model_inputs("bert")
UNLOADED_WORDS = "merge_and_unload"
DISABLED_WORDS = "disabled()"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny forwards: with two busy cores, torch's thread pool makes each op wait ~40x longer than one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def quiet_bert() -> nn.Module:
    """The tiny BERT with its own dropouts off, so in train mode only an adapter's dropout is random."""
    model = tiny_bert()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


PRISTINE = quiet_bert()


def config(projection: str, heads: bool = False, seed: int = 0, dropout: float | None = None) -> AdapterConfig:
    return AdapterConfig(
        projection=projection,
        rank=4,
        target_modules=["query", "value"],
        seed=seed,
        dropout=(0.1 if projection == "prolora" else 0.0) if dropout is None else dropout,
        projection_kwargs=dict(PROJECTION_CASES[projection]),
        modules_to_save=["classifier"] if heads else [],
    )


@dataclass(frozen=True)
class Expected:
    """What one adapter adds to the base: ΔW per adapted module, its head's tensors (None: the base's head)."""

    deltas: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor] | None
    dropout: float


def move_off_init(model: Any, name: str, seed: int) -> Expected:
    """Give adapter ``name`` nonzero parameters (and head), then record what it adds, computed by hand."""
    g = torch.Generator().manual_seed(seed)
    projection = model.adapters[name]
    classifier = model.base_model.classifier
    head = classifier.copies[name] if isinstance(classifier, ModuleCopies) and name in classifier.copies else None
    trained = [*projection.named_trainable_parameters()] + ([*head.named_parameters()] if head is not None else [])
    with torch.no_grad():
        for _, p in trained:
            p.add_(0.05 * torch.randn(p.shape, generator=g))
        theta = projection()
        deltas = {}
        for e in projection.layout:
            a = theta[e.a_offset : e.a_offset + e.a_numel].view(e.rank, e.in_features)
            b = theta[e.b_offset : e.b_offset + e.b_numel].view(e.out_features, e.rank)
            deltas[e.name] = projection.scaling * (b @ a)
    assert all(delta.abs().max() > 0 for delta in deltas.values()), "the machine needs ΔW ≠ 0"
    state = {k: v.detach().clone() for k, v in head.state_dict().items()} if head is not None else None
    return Expected(deltas, state, model.adapter_configs[name].dropout)


def reference_logits(pristine: nn.Module, expected: Expected | None) -> torch.Tensor:
    """The plain base's forward with W + ΔW written in by hand and the adapter's head in place."""
    reference = copy.deepcopy(pristine).eval()
    with torch.no_grad():
        if expected is not None:
            for name, delta in expected.deltas.items():
                reference.get_submodule(name).weight.add_(delta)
            if expected.head is not None:
                reference.classifier.load_state_dict(expected.head)
        return reference(**INPUTS).logits


def logits(model: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(**INPUTS).logits


def refused(call: Callable[[], Any], *words: str) -> str:
    """``call`` raises a one-line AdapterStateError containing every one of ``words``."""
    with pytest.raises(AdapterStateError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, (word, message)
    return message


class LifecycleMachine(RuleBasedStateMachine):
    """Random lifecycle call sequences against a reference computed from the tracked state."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="lorazoo-lifecycle-"))
        self.saves = 0
        self.blocks: list[Any] = []  # open ``with model.disabled()`` blocks, innermost last
        # keyed by ids; the value keeps the keyed objects alive, so an id is never reused while cached
        self.references: dict[tuple[int, int], tuple[Any, torch.Tensor]] = {}

    # ----------------------------------------------------------------- tracked state
    def start(self, model: Any, pristine: nn.Module, adapters: dict[str, Expected], training: bool) -> None:
        self.model, self.pristine, self.adapters, self.training = model, pristine, adapters, training
        self.active: str | None = next(iter(adapters), None)
        self.merged: str | None = None
        self.unloaded: Expected | None = None  # what the plain base holds after merge_and_unload
        self.references = {}

    def blocker(self) -> str | None:
        """Why a state-changing call must be refused now (the words its message must contain), or None."""
        if self.unloaded is not None:
            return UNLOADED_WORDS
        if self.blocks:
            return DISABLED_WORDS
        return None

    def attempt(self, legal: bool, call: Callable[[], Any], words: str | None = None) -> Any:
        if legal:
            return call()
        refused(call, *([words] if words else []))
        return None

    def effective(self) -> Expected | None:
        if self.unloaded is not None:
            return self.unloaded
        if self.blocks or self.active is None:
            return None
        return self.adapters[self.active]

    def reference(self, expected: Expected | None) -> torch.Tensor:
        key = (id(self.pristine), id(expected))
        if key not in self.references:
            self.references[key] = ((self.pristine, expected), reference_logits(self.pristine, expected))
        return self.references[key][1]

    def fresh_name(self) -> str | None:
        return next((n for n in "abc" if n not in self.adapters), None)

    # ----------------------------------------------------------------- rules
    @initialize(projection=MACHINE_PROJECTIONS, heads=st.booleans(), training=st.booleans())
    def attach_first(self, projection: str, heads: bool, training: bool) -> None:
        base = copy.deepcopy(PRISTINE).train(training)
        model = attach(base, config(projection, heads), "a")
        self.start(model, PRISTINE, {"a": move_off_init(model, "a", 1)}, training)

    @rule(projection=MACHINE_PROJECTIONS, heads=st.booleans())
    def attach_again(self, projection: str, heads: bool) -> None:
        """A second adapted model on the same base would share the first one's layers: refused while live;
        after merge_and_unload the returned plain base takes a new adapter (and becomes the reference)."""
        base = self.model.base_model
        if self.unloaded is None:
            refused(lambda: attach(base, config(projection, heads), "a"), "already")
            return
        pristine = copy.deepcopy(base)
        model = attach(base, config(projection, heads, seed=5), "a")
        self.start(model, pristine, {"a": move_off_init(model, "a", 2)}, base.training)

    @rule(projection=MACHINE_PROJECTIONS, heads=st.booleans(), seed=st.integers(0, 3))
    def add_adapter(self, projection: str, heads: bool, seed: int) -> None:
        name = self.fresh_name() or "a"
        words = self.blocker()
        legal = words is None and name not in self.adapters
        self.attempt(legal, lambda: self.model.add_adapter(name, config(projection, heads, seed)), words)
        if legal:
            self.adapters[name] = move_off_init(self.model, name, 10 + seed)
            self.active = self.active or name

    @rule(name=NAMES)
    def set_adapter(self, name: str) -> None:
        words = self.blocker()
        legal = words is None and name in self.adapters and self.merged is None
        self.attempt(legal, lambda: self.model.set_adapter(name), words)
        if legal:
            self.active = name

    @rule(name=NAMES)
    def delete_adapter(self, name: str) -> None:
        words = self.blocker()
        legal = words is None and name in self.adapters and name != self.merged
        self.attempt(legal, lambda: self.model.delete_adapter(name), words)
        if legal:
            del self.adapters[name]
            if self.active == name:
                self.active = next(iter(self.adapters), None)

    @rule()
    def enter_disabled(self) -> None:
        block = self.model.disabled()
        if self.unloaded is not None:
            refused(block.__enter__, UNLOADED_WORDS)
            return
        block.__enter__()
        self.blocks.append(block)

    @precondition(lambda self: bool(self.blocks))
    @rule()
    def exit_disabled(self) -> None:
        self.blocks.pop().__exit__(None, None, None)

    @rule()
    def merge(self) -> None:
        words = self.blocker()
        legal = words is None and self.merged is None and self.active is not None
        self.attempt(legal, self.model.merge, words)
        if legal:
            self.merged = self.active

    @rule()
    def unmerge(self) -> None:
        words = self.blocker()
        legal = words is None and self.merged is not None
        self.attempt(legal, self.model.unmerge, words)
        if legal:
            self.merged = None

    @rule()
    def merge_and_unload(self) -> None:
        words = self.blocker()
        legal = words is None and self.active is not None
        plain = self.attempt(legal, self.model.merge_and_unload, words)
        if legal:
            assert plain is self.model.base_model
            assert not any(isinstance(m, (AdaptedLayer, ModuleCopies)) for m in plain.modules())
            self.unloaded = self.adapters[self.active]  # type: ignore[index]
            torch.testing.assert_close(logits(plain), self.reference(self.unloaded), atol=1e-5, rtol=1e-4)

    @rule(switch=st.booleans())
    def save_and_load_onto_a_fresh_base(self, switch: bool) -> None:
        """A saved adapter loads onto a fresh base (in the base's mode) and gives the active adapter's output."""
        words = UNLOADED_WORDS if self.unloaded is not None else None
        legal = words is None and self.active is not None
        self.saves += 1
        path = self.tmp / f"save{self.saves}"
        self.attempt(legal, lambda: self.model.save_adapter(path), words)
        if not legal or self.active is None:
            return
        fresh = load_adapter(copy.deepcopy(self.pristine).train(self.training), path, self.active)
        expected = self.adapters[self.active]
        if self.training and expected.dropout > 0:
            fresh.eval()
        torch.testing.assert_close(logits(fresh), self.reference(expected), atol=1e-5, rtol=1e-4)
        fresh.train(self.training)
        if switch and not self.blocks:
            self.start(fresh, self.pristine, {self.active: expected}, self.training)

    @rule(name=NAMES)
    def save_and_load_as_another_adapter(self, name: str) -> None:
        words = UNLOADED_WORDS if self.unloaded is not None else None
        self.saves += 1
        path = self.tmp / f"save{self.saves}"
        self.attempt(words is None and self.active is not None, lambda: self.model.save_adapter(path), words)
        if words is not None or self.active is None:
            return
        words = self.blocker()
        legal = words is None and name not in self.adapters
        self.attempt(legal, lambda: self.model.load_adapter(path, name), words)
        if legal:
            self.adapters[name] = self.adapters[self.active]

    @rule(training=st.booleans())
    def train_or_eval(self, training: bool) -> None:
        self.model.train(training)
        self.training = training

    @rule(keep_copy=st.booleans())
    def deepcopy(self, keep_copy: bool) -> None:
        """A deep copy is an independent model in the same state (refused inside disabled(): the copy
        would never leave the block)."""
        if self.blocks:
            refused(lambda: copy.deepcopy(self.model), DISABLED_WORDS)
            return
        twin = copy.deepcopy(self.model)
        if keep_copy:
            self.model = twin

    # ----------------------------------------------------------------- what every state promises
    @invariant()
    def modes_follow_the_base(self) -> None:
        if not hasattr(self, "model"):
            return
        modes = {module.training for module in self.model.modules()}
        assert modes == {self.training}, f"modules in modes {modes}, the base is in {self.training}"

    @invariant()
    def outputs_are_what_the_state_says(self) -> None:
        if not hasattr(self, "model"):
            return
        if self.unloaded is None:
            assert self.model.active_adapter == self.active
            if not self.blocks:
                assert self.model.merged_adapter == self.merged
        expected = self.effective()
        got = logits(self.model)
        live_dropout = (
            self.training
            and expected is not None
            and expected.dropout > 0
            and self.unloaded is None
            and self.merged is None
        )
        if live_dropout:  # adapter dropout is on in train mode: two calls differ
            assert not torch.equal(got, logits(self.model))
        else:
            torch.testing.assert_close(got, self.reference(expected), atol=1e-5, rtol=1e-4)

    def teardown(self) -> None:
        while self.blocks:
            self.blocks.pop().__exit__(None, None, None)
        shutil.rmtree(self.tmp, ignore_errors=True)


LifecycleMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestLifecycleMachine = LifecycleMachine.TestCase


# ============================================================================ the reported cases, per category
PROJECTIONS = projection_names()


def attached(projection: str, training: bool, how: str, tmp_path: Path, dropout: float = 0.1) -> Any:
    """An adapter with dropout put onto a base in ``training`` mode by each way adapter layers get made."""
    cfg = config(projection, dropout=dropout)
    if how == "attach":
        model = attach(copy.deepcopy(PRISTINE).train(training), cfg)
    elif how == "load_adapter":
        source = attach(copy.deepcopy(PRISTINE), cfg)
        model = load_adapter(copy.deepcopy(PRISTINE).train(training), source.save_adapter(tmp_path / "a"))
    else:  # add_adapter / AdaptedModel.load_adapter onto new target modules of a model already attached
        first = dataclasses.replace(config("lora", dropout=0.0), target_modules=["key"])
        model = attach(copy.deepcopy(PRISTINE).train(training), first)
        if how == "add_adapter":
            model.add_adapter("other", cfg)
        else:
            source = attach(copy.deepcopy(PRISTINE), cfg)
            model.load_adapter(source.save_adapter(tmp_path / "a"), "other")
        model.set_adapter("other")
    move_off_init(model, model.active_adapter, 3)
    return model


HOWS = ["attach", "load_adapter", "add_adapter", "model.load_adapter"]


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("projection", PROJECTIONS)
def test_adapter_layers_take_the_base_mode_when_made(projection: str, how: str, tmp_path: Path):
    """Adapter layers made onto an eval-mode base run in eval mode (dropout off: every call gives the same
    output); onto a train-mode base, in train mode."""
    model = attached(projection, False, how, tmp_path)
    assert {m.training for m in model.modules()} == {False}
    torch.testing.assert_close(logits(model), logits(model), atol=0, rtol=0)
    model.train()
    assert not torch.equal(logits(model), logits(model)), "train() must switch adapter dropout on"
    model.eval()
    torch.testing.assert_close(logits(model), logits(model), atol=0, rtol=0)
    trained = attached(projection, True, how, tmp_path / "train")
    assert {m.training for m in trained.modules()} == {True}


@pytest.mark.parametrize("merged", [False, True])
@pytest.mark.parametrize("depth", [2, 3])
def test_nested_disabled_stays_disabled_until_the_outermost_block_exits(depth: int, merged: bool):
    model = attach(copy.deepcopy(PRISTINE), config("lora", heads=True))
    expected = move_off_init(model, "default", 4)
    if merged:
        model.merge()
    base, adapted = reference_logits(PRISTINE, None), reference_logits(PRISTINE, expected)
    blocks = [model.disabled() for _ in range(depth)]
    for block in blocks:
        block.__enter__()
        torch.testing.assert_close(logits(model), base, atol=1e-5, rtol=1e-4)
    for block in reversed(blocks[1:]):
        block.__exit__(None, None, None)
        torch.testing.assert_close(logits(model), base, atol=1e-5, rtol=1e-4)
    blocks[0].__exit__(None, None, None)
    torch.testing.assert_close(logits(model), adapted, atol=1e-5, rtol=1e-4)
    assert model.merged_adapter == ("default" if merged else None)


SECOND_MODELS: dict[str, Callable[[Any, Path], Any]] = {
    "attach": lambda model, tmp: attach(model.base_model, config("vera")),
    "load_adapter": lambda model, tmp: load_adapter(model.base_model, model.save_adapter(tmp / "s")),
    "attach onto the AdaptedModel": lambda model, tmp: attach(model, config("lora")),
}


@pytest.mark.parametrize("how", SECOND_MODELS)
def test_a_second_adapted_model_on_one_base_is_refused(how: str, tmp_path: Path):
    """Two adapted models on one base would share layers (the second's adapter never reached): refused,
    naming add_adapter; after merge_and_unload the plain base takes a new one."""
    model = attach(copy.deepcopy(PRISTINE), config("lora"))
    before = logits(model)
    refused(lambda: SECOND_MODELS[how](model, tmp_path), "already", "add_adapter")
    torch.testing.assert_close(logits(model), before, atol=0, rtol=0)
    plain = model.merge_and_unload()
    assert attach(plain, config("lora")).active_adapter == "default"


def _export(model: Any, tmp: Path) -> Any:
    return model.export_peft_lora(tmp / "peft")


# every state-changing call, each as it would be made; (call, allowed inside disabled())
CALLS: dict[str, tuple[Callable[[Any, Path], Any], bool]] = {
    "merge": (lambda m, tmp: m.merge(), False),
    "unmerge": (lambda m, tmp: m.unmerge(), False),
    "merge_and_unload": (lambda m, tmp: m.merge_and_unload(), False),
    "add_adapter": (lambda m, tmp: m.add_adapter("new", config("lora")), False),
    "set_adapter": (lambda m, tmp: m.set_adapter("second"), False),
    "delete_adapter": (lambda m, tmp: m.delete_adapter("second"), False),
    "load_adapter": (lambda m, tmp: m.load_adapter(tmp / "saved", "new"), False),
    "load_adapter_weights": (lambda m, tmp: m.load_adapter_weights(tmp / "saved"), False),
    "training_guard": (lambda m, tmp: m.training_guard().__enter__(), False),
    "deepcopy": (lambda m, tmp: copy.deepcopy(m), False),
    "adapter_names": (lambda m, tmp: m(**INPUTS, adapter_names=["default"] * 3), False),
    "disabled": (lambda m, tmp: m.disabled().__enter__(), True),
    "save_adapter": (lambda m, tmp: m.save_adapter(tmp / "again"), True),
    "export_peft_lora": (_export, True),
}


def two_adapters(tmp_path: Path) -> Any:
    model = attach(copy.deepcopy(PRISTINE), config("lora", heads=True))
    move_off_init(model, "default", 5)
    model.add_adapter("second", config("lora", heads=True, seed=1))
    move_off_init(model, "second", 6)
    model.save_adapter(tmp_path / "saved")
    return model


@pytest.mark.parametrize("call", [c for c in CALLS if c not in ("deepcopy",)])
def test_after_merge_and_unload_every_adapter_call_is_refused(call: str, tmp_path: Path):
    """The unloaded model has no adapter layers left; its forward is the merged plain base."""
    model = two_adapters(tmp_path)
    plain = model.merge_and_unload()
    merged = logits(plain)
    refused(lambda: CALLS[call][0](model, tmp_path), UNLOADED_WORDS)
    torch.testing.assert_close(logits(model), merged, atol=0, rtol=0)


@pytest.mark.parametrize("call", [c for c, (_, inside) in CALLS.items() if not inside])
def test_changing_adapters_inside_disabled_is_refused(call: str, tmp_path: Path):
    """Inside disabled() the adapter set, the active adapter and the merge stay as they were (else the
    block's exit would restore a state that no longer exists); the output stays the base's."""
    model = two_adapters(tmp_path)
    base = reference_logits(PRISTINE, None)
    with model.disabled():
        refused(lambda: CALLS[call][0](model, tmp_path), DISABLED_WORDS)
        torch.testing.assert_close(logits(model), base, atol=1e-5, rtol=1e-4)
    assert model.active_adapter == "default" and list(model.adapters) == ["default", "second"]


@pytest.mark.parametrize("call", [c for c, (_, inside) in CALLS.items() if inside])
def test_reading_calls_work_inside_disabled(call: str, tmp_path: Path):
    model = two_adapters(tmp_path)
    with model.disabled():
        CALLS[call][0](model, tmp_path)
        assert model.active_adapter == "default"
