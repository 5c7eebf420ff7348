"""The one optimizer spec (configs/optimizer/) and the one function that turns it into an optimizer.

Every learning rate and weight decay reaches the optimizer through ``build_optimizer`` and nowhere
else: ``optimizer.lr`` / ``optimizer.weight_decay`` are the defaults, ``optimizer.groups.<group>``
overrides them for one group of ``model.parameter_groups()`` (``head``, VB-LoRA's ``bank`` and
``logits``, Tied-LoRA's ``shared`` and ``scales``, ``projection``), and parameters whose names match
``optimizer.no_decay`` (biases, LayerNorm weights) never decay, as in transformers' Trainer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import torch

from lorazoo.train.errors import ConfigError
from lorazoo.train.options import check_choice

OPTIMIZERS = ("adamw",)
NO_DECAY = ["*bias", "*LayerNorm.weight", "*layer_norm.weight", "*norm.weight"]


@dataclass
class GroupOptions:
    """Overrides for one parameter group; None keeps the optimizer-wide value."""

    lr: float | None = None
    weight_decay: float | None = None


@dataclass
class OptimizerOptions:
    """configs/optimizer/*.yaml (see adamw.yaml for what each key means)."""

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    no_decay: list[str] = field(default_factory=lambda: list(NO_DECAY))
    groups: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice(self.name, OPTIMIZERS, "optimizer.name")
        _check_number("optimizer.lr", self.lr, positive=True)
        _check_number("optimizer.weight_decay", self.weight_decay)
        _check_number("optimizer.eps", self.eps, positive=True)
        betas = list(self.betas) if isinstance(self.betas, (list, tuple)) else None
        if betas is None or len(betas) != 2 or not all(_is_real(b) and 0.0 <= b < 1.0 for b in betas):
            raise ConfigError(
                f"optimizer.betas={self.betas!r} is invalid; valid: two numbers in [0, 1), e.g. [0.9, 0.999]"
            )
        self.betas = [float(b) for b in betas]
        if not isinstance(self.no_decay, (list, tuple)) or not all(isinstance(p, str) for p in self.no_decay):
            raise ConfigError(
                f"optimizer.no_decay={self.no_decay!r} is invalid; valid: a list of parameter-name patterns"
            )
        self.no_decay = list(self.no_decay)
        if not isinstance(self.groups, dict):
            raise ConfigError(f"optimizer.groups={self.groups!r} is invalid; valid: {{<group>: {{lr, weight_decay}}}}")
        self.groups = {str(name): _group(str(name), value) for name, value in self.groups.items()}

    def group(self, name: str) -> tuple[float, float]:
        """(lr, weight_decay) of parameter group ``name``."""
        override = self.groups.get(name, GroupOptions())
        lr = self.lr if override.lr is None else override.lr
        decay = self.weight_decay if override.weight_decay is None else override.weight_decay
        return float(lr), float(decay)


def build_optimizer(model: Any, opts: OptimizerOptions) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters of ``model.parameter_groups()``, one torch group per
    (parameter group, decays?) pair, each named ``<group>`` or ``<group>/no_decay``."""
    groups = check_groups(model, opts)
    names = {id(p): n for n, p in model.named_parameters()}
    torch_groups = []
    for group_name, params in groups.items():
        lr, decay = opts.group(group_name)
        trainable = [p for p in params if p.requires_grad]
        exempt = [p for p in trainable if any(fnmatchcase(names.get(id(p), ""), pat) for pat in opts.no_decay)]
        decaying = [p for p in trainable if all(p is not q for q in exempt)]
        for suffix, members, wd in (("", decaying, decay), ("/no_decay", exempt, 0.0)):
            if members:
                torch_groups.append({"params": members, "lr": lr, "weight_decay": wd, "name": group_name + suffix})
    if not torch_groups:
        raise ConfigError("the adapter has no trainable parameters: nothing for the optimizer to train")
    return torch.optim.AdamW(torch_groups, lr=opts.lr, betas=(opts.betas[0], opts.betas[1]), eps=opts.eps)


def check_groups(model: Any, opts: OptimizerOptions) -> dict[str, list[torch.nn.Parameter]]:
    """``model.parameter_groups()``, after checking that every ``optimizer.groups`` key names one of them."""
    groups = model.parameter_groups()
    unknown = sorted(set(opts.groups) - set(groups))
    if unknown:
        raise ConfigError(f"optimizer.groups names unknown group(s) {unknown}; this adapter's groups: {sorted(groups)}")
    return groups


def _group(name: str, value: Any) -> GroupOptions:
    if isinstance(value, GroupOptions):
        return value
    if not isinstance(value, dict):
        raise ConfigError(
            f"optimizer.groups.{name}={value!r} is invalid; valid: {{lr: <float>, weight_decay: <float>}}"
        )
    known = [f.name for f in dataclasses.fields(GroupOptions)]
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in optimizer.groups.{name}; valid keys: {known}")
    group = GroupOptions(**value)
    if group.lr is not None:
        _check_number(f"optimizer.groups.{name}.lr", group.lr, positive=True)
    if group.weight_decay is not None:
        _check_number(f"optimizer.groups.{name}.weight_decay", group.weight_decay)
    return group


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_number(key: str, value: Any, positive: bool = False) -> None:
    if not _is_real(value) or value < 0 or (positive and value == 0):
        raise ConfigError(f"{key}={value!r} is invalid; valid: a finite number {'> 0' if positive else '>= 0'}")
