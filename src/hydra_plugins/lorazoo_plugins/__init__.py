"""lorazoo's Hydra plugins where Hydra looks for them (it instantiates launchers and sweepers from
``hydra_plugins`` only); their logic lives in lorazoo.train.slurm_launcher and lorazoo.train.optuna_study."""

from lorazoo.train.optuna_study import OptunaSweeper as _OptunaSweeper
from lorazoo.train.slurm_launcher import SlurmLauncher as _SlurmLauncher


class SlurmLauncher(_SlurmLauncher):
    """``_target_`` of configs/hydra/launcher/submitit_slurm.yaml."""


class OptunaSweeper(_OptunaSweeper):
    """``_target_`` of configs/hydra/sweeper/lr_search.yaml."""


__all__ = ["OptunaSweeper", "SlurmLauncher"]
