"""hydra-optuna-sweeper's OptunaSweeper whose study outlives its process (configs/hydra/sweeper/lr_search.yaml).

With ``hydra.sweeper.storage=<database URL>`` and ``hydra.sweeper.study_name=<name>`` the plugin already
reopens the study (``load_if_exists``), but it then runs ``n_trials`` more. Here ``n_trials`` is the study's
total: a relaunch after the sweeper was killed runs only the trials still missing (finished ones, completed
or failed, count; a trial left running by the killed process does not, so it is run again), and several
sweeper processes sharing one study each run at most what was missing when they started. A continued seeded
sampler is seeded anew (seed + finished trials), so it does not draw the finished trials' values again.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra_plugins.hydra_optuna_sweeper import optuna_sweeper as plugin
from omegaconf import OmegaConf

from lorazoo.train.errors import ConfigError

log = logging.getLogger(__name__)


def finished_trials(storage: Any, study_name: str) -> int:
    """Trials of ``study_name`` in ``storage`` that ended (complete, failed or pruned); 0 for a new study."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # optuna 2.x: no study of that name yet
        return 0
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=done))


class OptunaSweeper(plugin.OptunaSweeper):
    """The plugin's sweeper, with ``n_trials`` counted over the whole persisted study."""

    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        if impl.storage is not None:
            if not impl.study_name:
                raise ConfigError(
                    f"hydra.sweeper.storage={impl.storage!r} needs hydra.sweeper.study_name=<name>, so that a "
                    "relaunch finds the same study; valid: any name, e.g. the experiment's"
                )
            done = finished_trials(impl.storage, impl.study_name)
            missing = max(0, impl.n_trials - done)
            log.info(f"Study {impl.study_name}: {done} of {impl.n_trials} trials finished; running {missing}")
            impl.n_trials = missing
            if done and impl.config is not None:
                _continue_sampling(impl.sampler, OmegaConf.select(impl.config, "hydra.sweeper.sampler.seed"), done)
        return super().sweep(arguments)


def _continue_sampling(sampler: Any, seed: int | None, done: int) -> None:
    """A seeded sampler restarted as it was would draw the finished trials' values again: seed it with
    ``seed + done`` instead (reproducible for a given study state), or afresh when it had no seed. The random
    streams are optuna 2.10's (the version hydra-optuna-sweeper 1.3 pins): TPE's own and its startup sampler's."""
    import numpy as np

    if seed is None:
        sampler.reseed_rng()
        return
    for owner in (sampler, getattr(sampler, "_random_sampler", None)):
        if owner is not None and hasattr(owner, "_rng"):
            owner._rng = np.random.RandomState(int(seed) + done)
