"""Optuna sweeper for Hydra multirun, written against Optuna's ask/tell API.

Why not ``hydra-optuna-sweeper``: it pins ``optuna<3`` (we use Optuna 5). This one keeps its
config interface (``hydra.sweeper.params`` with ``interval(a, b)``, ``tag(log, interval(a, b))``,
``range(a, b[, step])``, ``choice(...)``; ``direction``, ``n_trials``, ``n_jobs``, ``sampler``,
``storage``, ``study_name``), so ``hparams_search`` configs read the same. Trials run through the
configured launcher (basic, joblib or SLURM), ``n_jobs`` at a time, one output directory per
job; each job's return value (``optimized_metric``, e.g. ``val/acc_best``) is told to the study.
A failing trial is recorded as failed and the sweep goes on. The best trial is written to
``<sweep dir>/optimization_results.yaml``. With ``storage`` (e.g. ``sqlite:///study.db``) and a
``study_name`` a killed sweep continues where it stopped.

Hydra only loads plugins from the ``hydra_plugins`` namespace; ``hydra_plugins.actionlab_sweeper``
subclasses ``OptunaSweeperImpl`` there (``conf/hydra/sweeper/optuna.yaml``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

__all__ = ["OptunaSweeperImpl", "search_space", "suggest"]

log = logging.getLogger(__name__)


def search_space(overrides: Sequence[Override]) -> dict[str, Any]:
    """Sweep overrides -> ``{key: ChoiceSweep | RangeSweep | IntervalSweep}``."""
    space = {}
    for override in overrides:
        if not override.is_sweep_override():
            continue
        value = override.value()
        if not isinstance(value, (ChoiceSweep, RangeSweep, IntervalSweep)):
            raise ValueError(f"unsupported sweep {override.input_line!r}: use choice, range or interval")
        space[override.get_key_element()] = value
    return space


def suggest(trial: Any, name: str, spec: Any) -> Any:
    """Ask ``trial`` for a value of ``name`` from a Hydra sweep ``spec``."""
    log_scale = "log" in (getattr(spec, "tags", None) or set())
    if isinstance(spec, IntervalSweep):
        if isinstance(spec.start, int) and isinstance(spec.end, int):
            return trial.suggest_int(name, spec.start, spec.end, log=log_scale)
        return trial.suggest_float(name, float(spec.start), float(spec.end), log=log_scale)
    if isinstance(spec, RangeSweep):
        values = list(range(int(spec.start), int(spec.stop), int(spec.step or 1))) if all(
            isinstance(v, int) for v in (spec.start, spec.stop, spec.step or 1)) else None
        if values is not None:
            return trial.suggest_int(name, values[0], values[-1], step=int(spec.step or 1), log=log_scale)
        count = int(math.ceil((spec.stop - spec.start) / spec.step))
        return trial.suggest_categorical(name, [spec.start + i * spec.step for i in range(count)])
    choices = list(spec.list)
    return trial.suggest_categorical(name, [c if isinstance(c, (int, float, str, bool)) or c is None else str(c)
                                            for c in choices])


def _format(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _sampler(spec: Mapping[str, Any] | None) -> Any:
    import optuna

    if not spec:
        return optuna.samplers.TPESampler()
    spec = dict(spec)
    name = spec.pop("name", "tpe").lower()
    classes = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
               "cmaes": optuna.samplers.CmaEsSampler, "nsgaii": optuna.samplers.NSGAIISampler,
               "grid": None}
    if name not in classes or classes[name] is None:
        raise ValueError(f"hydra.sweeper.sampler.name must be one of tpe, random, cmaes, nsgaii; got {name!r}")
    return classes[name](**spec)


class OptunaSweeperImpl(Sweeper):
    """See the module docstring. Args mirror ``conf/hydra/sweeper/optuna.yaml``."""

    def __init__(
        self,
        direction: str = "maximize",
        n_trials: int = 20,
        n_jobs: int = 1,
        study_name: str | None = None,
        storage: str | None = None,
        sampler: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> None:
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"hydra.sweeper.direction must be maximize or minimize, got {direction!r}")
        self.direction = direction
        self.n_trials = int(n_trials)
        self.n_jobs = max(1, int(n_jobs))
        self.study_name = study_name
        self.storage = storage
        self.sampler_spec = OmegaConf.to_container(sampler, resolve=True) if isinstance(sampler, DictConfig) else sampler
        self.params = dict(params or {})
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context  # Sweeper.validate_batch_is_legal reads its config loader
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        import optuna

        assert self.config is not None and self.launcher is not None
        parser = OverridesParser.create()
        configured = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()])
        command_line = parser.parse_overrides(arguments)
        space = search_space(configured)
        space.update(search_space(command_line))  # the command line wins
        fixed = [o.input_line for o in command_line if not o.is_sweep_override()]
        if not space:
            raise ValueError("the Optuna sweeper has nothing to search: set hydra.sweeper.params or pass "
                             "sweeps such as optimizer.lr='tag(log, interval(1e-3, 1))'")
        study = optuna.create_study(
            study_name=self.study_name, storage=self.storage, sampler=_sampler(self.sampler_spec),
            direction=self.direction, load_if_exists=bool(self.storage),
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        done = len(study.trials)
        while done < self.n_trials:
            batch = min(self.n_jobs, self.n_trials - done)
            trials = [study.ask() for _ in range(batch)]
            jobs = []
            for trial in trials:
                values = {name: suggest(trial, name, spec) for name, spec in space.items()}
                jobs.append(tuple(fixed + [f"{k}={_format(v)}" for k, v in values.items()]))
            self.validate_batch_is_legal(jobs)
            results = self.launcher.launch(jobs, initial_job_idx=done)
            for trial, result in zip(trials, results):
                try:
                    value = float(result.return_value)
                    if math.isnan(value):
                        raise ValueError("objective is NaN")
                except Exception as err:  # a crashed or metric-less job fails its trial only
                    log.warning("trial %d failed: %s", trial.number, err)
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                else:
                    study.tell(trial, value)
            done += batch
        completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        summary: dict[str, Any] = {"name": "optuna", "direction": self.direction, "n_trials": len(study.trials)}
        if completed:
            summary.update(best_params=dict(study.best_params), best_value=float(study.best_value),
                           best_trial=study.best_trial.number)
            log.info("best %s: %s with %s", self.direction, study.best_value, study.best_params)
        OmegaConf.save(OmegaConf.create(summary), sweep_dir / "optimization_results.yaml")
        return study
