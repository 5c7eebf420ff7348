"""lorazoo's Hydra plugins where Hydra looks for them (it instantiates launchers and sweepers from
``hydra_plugins`` only); their logic lives in lorazoo.train.sweep.slurm_launcher and lorazoo.train.sweep.optuna_study.

Hydra imports this package on every start: each class is defined only when the plugin it extends is installed
(hydra-submitit-launcher is the ``slurm`` extra), so a plain install starts without import warnings."""

from importlib.util import find_spec

__all__: list[str] = []

if find_spec("hydra_plugins.hydra_optuna_sweeper") is not None:
    from lorazoo.train.sweep.optuna_study import OptunaSweeper as _OptunaSweeper

    class OptunaSweeper(_OptunaSweeper):
        """``_target_`` of configs/hydra/sweeper/lr_search.yaml."""

    __all__.append("OptunaSweeper")

if find_spec("hydra_plugins.hydra_submitit_launcher") is not None:
    from lorazoo.train.sweep.slurm_launcher import SlurmLauncher as _SlurmLauncher

    class SlurmLauncher(_SlurmLauncher):
        """``_target_`` of configs/hydra/launcher/submitit_slurm.yaml."""

    __all__.append("SlurmLauncher")
