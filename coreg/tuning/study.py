"""The tuning driver: an Optuna study over training configs, one nested MLflow run per trial.

How a study maps to Optuna and MLflow:

* **Objective.** Each trial turns :func:`coreg.tuning.spaces.suggest` into ``--set`` overrides
  (the user's own ``--set`` values win over suggested ones, so pinning a key removes it from the
  search), trains with them and returns the **selection metric of its last epoch** (maximised).
  The last epoch, not the best one, because the student that a trial logs and that
  ``coreg register`` later promotes is the final-epoch student. The metric is label-free by
  default: ``auto`` is ``val_acc`` when few-shot gold labels fall into the validation hold-out,
  else ``val_approx_acc`` (PLENCH approximated accuracy); ``val_covering_rate`` can be chosen too.
* **Pruning.** An epoch callback reports the metric after every epoch (``trial.report(value,
  epoch)``) and raises :class:`optuna.TrialPruned` when the pruner says so (median or Hyperband,
  never during the warm-up epochs).
* **Failures.** A trial whose training raises (divergence is a :class:`~coreg.errors.CoregError`,
  a bad suggested value a config error, a CUDA error a ``RuntimeError``) is recorded as ``FAIL``
  with its message in the trial's user attribute ``fail_reason`` and the run's tag ``error``; the
  study goes on. A process stops after ``max_failures`` failures in a row (a broken setup, not
  a bad region of the space). Any other exception (a bug) stops the study.
* **Budget and resuming.** ``n_trials`` is the size the study should reach, not the number of
  trials this process runs: trials that are COMPLETE, PRUNED or RUNNING (in another worker)
  count, FAILED ones do not (they are retried with new values). Re-running the command with
  the same storage and study name therefore resumes it and runs only the missing trials;
  raising ``--n-trials`` grows it. ``--timeout`` stops starting new trials after that many
  seconds.
* **Parallel workers.** Several processes (or machines) join one study by running the same
  command with the same storage URL and study name; they share the budget. Each process
  checks the count right before starting a trial, so concurrent workers overshoot ``n_trials``
  by at most one trial each in a race. A local sqlite file works for a few processes on one
  machine; across machines use a database server, e.g.
  ``--storage postgresql://user:password@dbhost:5432/optuna`` (needs ``psycopg2``) or
  ``mysql+pymysql://...``. Trials of a killed worker stop counting and are retried
  (:func:`reclaim_dead_trials`): at once when the worker ran on this host (its pid is gone),
  otherwise after :data:`GRACE_PERIOD_S` seconds without a heartbeat; their MLflow runs are
  marked FAILED. A worker that reaches the budget while trials of other hosts are still
  RUNNING waits (at most a grace period plus a heartbeat) to retry any whose worker is gone. Workers started at the same moment with the same seed
  draw the same random start-up points: give them different ``--sampler-seed`` values.
* **MLflow.** One parent run per study in the experiment, recorded in the study (user attr
  ``mlflow_parent_run_id``, elected atomically through the Optuna storage when workers start
  together, see :meth:`MlflowStudyTracking.elect_parent`) and tagged ``coreg.study=<name>`` and
  ``coreg.role=study``, so a re-run or another worker logs under the same parent. Each trial is a nested run tagged ``coreg.study``, ``coreg.role=trial`` and
  ``optuna.trial_number``, holding the trial's params (``optuna.<name>``), the training run's
  metrics, artifacts and student model; pruned trials end as KILLED, failed ones as FAILED.
  The parent run is tagged ``best_run`` (the best trial's run id) and logs ``best_value``, the
  best params (tags ``best_param.<name>`` and ``best_params.json``), the trial table and the
  optimisation-history and parameter-importance plots.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import socket
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from coreg.config import StageConfig, check
from coreg.errors import CoregError
from coreg.tracking.base import NullTracker, Tracker

if TYPE_CHECKING:
    import optuna

    from coreg.engine.config import TrainConfig
    from coreg.engine.trainer import EpochCallback, FitResult

logger = logging.getLogger(__name__)

METRICS = ("auto", "val_approx_acc", "val_covering_rate", "val_acc")
PRUNERS = ("median", "hyperband", "none")
STUDY_TAG = "coreg.study"
ROLE_TAG = "coreg.role"
STUDY_FILE = "study.json"
HEARTBEAT_S = 30
GRACE_PERIOD_S = 120
# Exceptions that make one trial FAIL without stopping the study (CoregError is a ValueError).
TRIAL_ERRORS: tuple[type[Exception], ...] = (ValueError, RuntimeError, ArithmeticError)
# Settings a resumed study must share with the one that created it (stored as study user attrs).
_MUST_MATCH = ("method", "metric", "data_fingerprint", "experiment")
# Study user attribute: the MLflow metric `coreg register --study` ranks the trial runs by
# (``final_<selection metric>``; with ``--metric auto`` it is set when the first trial completes).
REGISTER_METRIC_ATTR = "register_metric"
# Study user attribute: the study's MLflow parent run; how long a worker waits for another to record it.
PARENT_ATTR = "mlflow_parent_run_id"
PARENT_CLAIM_WAIT_S = 60.0

SuggestFn = Callable[[str, "optuna.Trial"], list[str]]
ConfigFn = Callable[[Sequence[str]], "TrainConfig"]


class TrainFn(Protocol):
    """Trains one config: ``coreg._cli.train.train_tracked`` with the data already bound."""

    def __call__(self, *, cfg: TrainConfig, out_dir: Path, tracker: Tracker,
                 callbacks: Sequence[EpochCallback]) -> FitResult:
        """Train ``cfg`` into ``out_dir``, logging to ``tracker``; callbacks run after every epoch."""


@dataclass(frozen=True)
class TuneConfig(StageConfig):
    """Settings of one ``coreg tune`` process (the training config is built per trial)."""

    method: str = "coreg"
    n_trials: int = 20
    storage: str = "sqlite:///optuna.db"
    study_name: str = "coreg"
    experiment: str = "coreg-tune"
    pruner: str = "median"
    metric: str = "auto"
    timeout: float | None = None
    sampler_seed: int = 0
    max_failures: int = 3

    def validate(self) -> None:
        check(self.n_trials >= 1, f"n_trials must be >= 1, got {self.n_trials}")
        check(self.pruner in PRUNERS, f"pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        check(self.metric in METRICS, f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        check(self.timeout is None or self.timeout > 0, f"timeout must be > 0 seconds, got {self.timeout}")
        check(self.max_failures >= 1, f"max_failures must be >= 1, got {self.max_failures}")
        check(bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", self.study_name)),
              f"study name must be letters, digits, '.', '_' or '-' (got {self.study_name!r})")
        check("://" in self.storage, f"storage must be a database URL such as sqlite:///optuna.db, got {self.storage!r}")


@dataclass
class TrialReport:
    """What happened to one trial run by this process."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    run_id: str | None
    message: str = ""


@dataclass
class StudySummary:
    """The study after this process's trials (counts cover every worker)."""

    study_name: str
    storage: str
    n_trials: int
    counts: dict[str, int]
    ran: list[TrialReport]
    best_value: float | None
    best_params: dict[str, Any]
    best_trial: int | None
    best_run_id: str | None
    parent_run_id: str | None
    stopped: str
    figures: list[str] = field(default_factory=list)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs, tags and params)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def resolve_suggest() -> SuggestFn:
    """The per-method search spaces (:func:`coreg.tuning.spaces.suggest`)."""
    from coreg.tuning.spaces import suggest

    return suggest


def make_pruner(name: str, *, warmup: int, epochs: int) -> optuna.pruners.BasePruner:
    """``median``, ``hyperband`` or ``none``; no pruning during the ``warmup`` epochs.

    Raises:
        CoregError: unknown name.
    """
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=warmup)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, warmup), max_resource=max(epochs, 2),
                                              reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise CoregError(f"unknown pruner {name!r}; valid: {', '.join(PRUNERS)}")


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats (so a killed worker's trial becomes FAIL).

    Raises:
        CoregError: the URL cannot be opened.
    """
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several local workers write to one file: wait for the lock instead of failing.
        kwargs = {"connect_args": {"timeout": 60}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                              grace_period=GRACE_PERIOD_S)
    except (ImportError, ValueError, RuntimeError, optuna.exceptions.OptunaError, SQLAlchemyError) as e:
        raise CoregError(f"cannot open Optuna storage {redact_url(url)}: {str(e).splitlines()[0]}") from None


def open_study(cfg: TuneConfig, *, warmup: int, epochs: int, attrs: dict[str, Any] | None = None) -> optuna.Study:
    """Create the study, or load it if the storage already has one of that name.

    Args:
        cfg: tune settings (storage, study name, pruner, sampler seed).
        warmup: warm-up epochs (never pruned).
        epochs: epochs per trial (Hyperband's maximum resource).
        attrs: settings stored on a new study; a loaded study must agree on ``method``,
            ``metric`` and ``data_fingerprint``.

    Raises:
        CoregError: the storage cannot be opened, or the existing study was made for other settings.
    """
    import optuna

    storage = make_storage(cfg.storage)
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    n_before = existing[cfg.study_name].n_trials if cfg.study_name in existing else 0
    # A resumed study gets a fresh random stream, so it does not redraw the first trials' values.
    sampler = optuna.samplers.TPESampler(seed=cfg.sampler_seed + n_before, constant_liar=True)
    pruner = make_pruner(cfg.pruner, warmup=warmup, epochs=epochs)
    study = optuna.create_study(study_name=cfg.study_name, storage=storage, sampler=sampler, pruner=pruner,
                                direction="maximize", load_if_exists=True)
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise CoregError(f"study {cfg.study_name} minimises; coreg studies maximise the selection metric")
    old = study.user_attrs
    new = dict(attrs or {})
    for key in _MUST_MATCH:
        if key in old and key in new and old[key] != new[key]:
            raise CoregError(f"study {cfg.study_name} was created with {key}={old[key]!r}, not {new[key]!r}; "
                             "use the same settings or another --study-name")
    if "epochs" in old and "epochs" in new and old["epochs"] != new["epochs"]:
        logger.warning("study %s was created with %s epochs per trial, this process runs %s",
                       cfg.study_name, old["epochs"], new["epochs"])
    for key, value in new.items():
        if key not in old:
            study.set_user_attr(key, value)
    return study


def read_study_attrs(storage: str, study_name: str) -> dict[str, Any] | None:
    """The user attributes of an existing study, or ``None`` if the storage has no such study.

    A sqlite file that does not exist is not created.

    Raises:
        CoregError: the storage cannot be opened.
    """
    import optuna

    if storage.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        db = make_url(storage).database
        if db and db != ":memory:" and not Path(db).exists():
            return None
    summaries = optuna.get_all_study_summaries(make_storage(storage), include_best_trial=False)
    for summary in summaries:
        if summary.study_name == study_name:
            return dict(summary.user_attrs)
    return None


def counted_trials(study: optuna.Study) -> int:
    """Trials that count towards ``n_trials``: COMPLETE, PRUNED and RUNNING (FAIL is retried)."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                        TrialState.RUNNING)))


def state_counts(study: optuna.Study) -> dict[str, int]:
    """Number of trials per state name (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING`` ...)."""
    return dict(Counter(t.state.name for t in study.get_trials(deepcopy=False)))


def worker_id() -> str:
    """``host:pid`` of this process, stored on each trial it runs (user attribute ``worker``)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _local_pid(trial: optuna.trial.FrozenTrial) -> int | None:
    """The pid of the trial's worker when that worker ran on this host, else ``None``."""
    host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
    return int(pid) if host == socket.gethostname() and pid.isdigit() else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True


def reclaim_dead_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Mark FAIL the RUNNING trials whose worker is gone, so they stop counting and are retried.

    * a worker on this host whose pid no longer runs (killed): at once;
    * a trial whose heartbeat is older than :data:`GRACE_PERIOD_S` (Optuna's heartbeat check);
    * a trial that never got as far as recording its worker and started more than
      :data:`GRACE_PERIOD_S` ago: Optuna skips trials without a heartbeat row, so one killed
      between its creation and its first heartbeat would otherwise count forever.

    Returns:
        The trials this call failed (as they were while RUNNING).
    """
    import optuna
    from optuna.trial import TrialState

    running = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    if not running:
        return []
    now = time.time()
    mine = os.getpid()
    for t in running.values():
        pid = _local_pid(t)
        dead = pid is not None and pid != mine and not _pid_alive(pid)
        orphan = ("worker" not in t.user_attrs and t.datetime_start is not None
                  and now - t.datetime_start.timestamp() > GRACE_PERIOD_S)
        if dead or orphan:
            with contextlib.suppress(ValueError, optuna.exceptions.UpdateFinishedTrialError):
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    still = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    failed = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    gone = [t for n, t in running.items() if n not in still and n in failed]
    for t in gone:
        logger.warning("trial %d was left RUNNING by a worker that is gone (%s): marked FAIL, it will be retried",
                       t.number, t.user_attrs.get("worker", "never started"))
    return gone


def _unconfirmed_running(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """RUNNING trials of workers this process cannot check by pid (another host, or not started)."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if _local_pid(t) is None]


class MetricUnavailable(CoregError):
    """The chosen selection metric is not computed in this setup (stops the study, not one trial)."""


def resolve_metric(metric: str, metrics: dict[str, float]) -> str:
    """The metric key to optimise: ``auto`` is ``val_acc`` if logged, else ``val_approx_acc``.

    Raises:
        MetricUnavailable: the metric is not in ``metrics``.
    """
    name = metric
    if metric == "auto":
        name = "val_acc" if "val_acc" in metrics else "val_approx_acc"
    if name not in metrics:
        hint = ("no few-shot gold label falls into the validation hold-out: use more --shots or another --metric"
                if name == "val_acc" else "set val_fraction > 0 so that a validation hold-out exists")
        raise MetricUnavailable(f"selection metric {name} is not computed ({hint})")
    return name


class PruningCallback:
    """Epoch callback: report the selection metric to the trial, prune when the pruner says so.

    Args:
        trial: the running trial.
        metric: one of :data:`METRICS`.
    """

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial = trial
        self.metric = metric
        self.last: tuple[int, str, float] | None = None

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        import optuna

        name = resolve_metric(self.metric, metrics)
        value = float(metrics[name])
        self.last = (epoch, name, value)
        if not math.isfinite(value):
            raise CoregError(f"selection metric {name} is {value} at epoch {epoch}")
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} ({name}={value:.4f})")


class StudyTracking(Protocol):
    """Where the study and its trials are recorded (MLflow, or nothing)."""

    def parent(self, *, params: dict[str, Any], study: optuna.Study) -> contextlib.AbstractContextManager[Tracker]:
        """Open (or resume) the study's parent run (one per study, whichever worker asks)."""

    def trial(self, *, number: int, tags: dict[str, Any]) -> contextlib.AbstractContextManager[Tracker]:
        """Open a nested run for one trial."""

    def set_status(self, run_id: str | None, status: str) -> None:
        """Override a finished run's status (``KILLED`` for pruned trials)."""


class NullStudyTracking:
    """Records nothing (library use and tests without MLflow)."""

    @contextlib.contextmanager
    def parent(self, *, params: dict[str, Any], study: optuna.Study) -> Iterator[Tracker]:
        yield NullTracker()

    @contextlib.contextmanager
    def trial(self, *, number: int, tags: dict[str, Any]) -> Iterator[Tracker]:
        yield NullTracker()

    def set_status(self, run_id: str | None, status: str) -> None:
        pass


class MlflowStudyTracking:
    """One parent run per study (found by tags, shared by re-runs and workers), nested trial runs.

    Args:
        experiment: MLflow experiment of the study.
        study_name: the Optuna study name (tag ``coreg.study``).
    """

    def __init__(self, *, experiment: str, study_name: str) -> None:
        self.experiment = experiment
        self.study_name = study_name

    def find_parent(self) -> str | None:
        """Run id of the study's parent run (the oldest one if workers raced), or ``None``."""
        from mlflow.tracking import MlflowClient

        from coreg.tracking.mlflow import setup_mlflow

        mlflow = setup_mlflow()
        exp = mlflow.get_experiment_by_name(self.experiment)
        if exp is None:
            return None
        runs = MlflowClient().search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`{STUDY_TAG}` = '{self.study_name}' and tags.`{ROLE_TAG}` = 'study'",
            max_results=50)
        if not runs:
            return None
        return min(runs, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id

    def _create_parent(self, params: dict[str, Any]) -> str:
        from mlflow.tracking import MlflowClient

        from coreg.tracking.mlflow import setup_mlflow

        mlflow = setup_mlflow(self.experiment)
        exp = mlflow.get_experiment_by_name(self.experiment)
        client = MlflowClient()
        run = client.create_run(exp.experiment_id, run_name=f"study-{self.study_name}",
                                tags={STUDY_TAG: self.study_name, ROLE_TAG: "study", "coreg.stage": "tune"})
        for key, value in params.items():
            client.log_param(run.info.run_id, key, str(value))
        return run.info.run_id

    def _recorded_parent(self, study: optuna.Study) -> str | None:
        """The parent run id the study records, if that run still exists (not deleted) in MLflow."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        run_id = study.user_attrs.get(PARENT_ATTR)
        if not run_id:
            return None
        try:
            run = MlflowClient().get_run(run_id)
        except MlflowException:
            return None
        return run_id if run.info.lifecycle_stage == "active" else None

    def elect_parent(self, study: optuna.Study, params: dict[str, Any]) -> str:
        """The study's one parent run: the recorded one, else one made by exactly one worker.

        Workers started together all find no parent. Searching MLflow after creating one cannot
        settle who keeps theirs (a store under lock contention shows a run long after its start
        time), so the election goes through the Optuna storage, whose study creation is atomic:
        the worker that creates the claim study ``<name>.mlflow-parent-claim`` makes the parent
        run, records it as the study's user attr ``mlflow_parent_run_id`` and removes the claim;
        the others wait for the record. A claim left by a worker that died (no record after
        :data:`PARENT_CLAIM_WAIT_S` seconds) is removed and the election re-run.
        """
        import optuna

        storage = study._storage  # noqa: SLF001 - the one storage the workers share
        claim = f"{self.study_name}.mlflow-parent-claim"
        for _ in range(3):
            run_id = self._recorded_parent(study) or self.find_parent()  # find_parent: studies older than the record
            if run_id:
                break
            try:
                storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], study_name=claim)
            except optuna.exceptions.DuplicatedStudyError:
                run_id = self._wait_for_parent(study)
                if run_id is None:  # the elector died: drop its claim and elect again
                    with contextlib.suppress(KeyError):
                        storage.delete_study(storage.get_study_id_from_name(claim))
                    continue
                break
            try:
                run_id = self._create_parent(params)
                study.set_user_attr(PARENT_ATTR, run_id)
            finally:
                with contextlib.suppress(KeyError):
                    storage.delete_study(storage.get_study_id_from_name(claim))
            break
        else:
            raise CoregError(f"could not elect the MLflow parent run of study {self.study_name}: "
                             f"remove the Optuna study {claim!r} if no worker is running")
        if study.user_attrs.get(PARENT_ATTR) != run_id:
            study.set_user_attr(PARENT_ATTR, run_id)
        return run_id

    def _wait_for_parent(self, study: optuna.Study) -> str | None:
        deadline = time.monotonic() + PARENT_CLAIM_WAIT_S
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if run_id := self._recorded_parent(study):  # user_attrs reads the storage each time
                return run_id
        return None

    @contextlib.contextmanager
    def parent(self, *, params: dict[str, Any], study: optuna.Study) -> Iterator[Tracker]:
        from coreg.tracking.mlflow import MlflowTracker

        run_id = self.elect_parent(study, params)
        with MlflowTracker.start(experiment=self.experiment, run_id=run_id) as tracker:
            yield tracker

    @contextlib.contextmanager
    def trial(self, *, number: int, tags: dict[str, Any]) -> Iterator[Tracker]:
        from coreg.tracking.mlflow import MlflowTracker

        with MlflowTracker.start(experiment=self.experiment, run_name=f"{self.study_name}-trial-{number}",
                                 nested=True, tags={k: str(v) for k, v in tags.items()}) as tracker:
            yield tracker

    def set_status(self, run_id: str | None, status: str) -> None:
        from mlflow.tracking import MlflowClient

        if run_id:
            MlflowClient().set_terminated(run_id, status=status)


def _set_status_quietly(tracking: StudyTracking, run_id: str | None, status: str) -> None:
    """End a dead trial's run; a tracking error here must not stop the study."""
    try:
        tracking.set_status(run_id, status)
    except Exception as e:  # noqa: BLE001 - MLflow raises many types (deleted run, store down)
        logger.warning("could not mark run %s %s: %s", run_id, status, _one_line(e))


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:500]


class Objective:
    """``objective(trial) -> float``: suggest, build the config, train in a nested run, return the metric.

    Args:
        cfg: tune settings.
        build_config: overrides -> training config (the user's ``--set`` values applied last).
        train: trains one config (see :class:`TrainFn`).
        suggest: the search space (``suggest(method, trial)``).
        out_dir: trial ``n`` trains in ``out_dir/trial-n``.
        tracking: where runs go.
        on_trial: called with a :class:`TrialReport` after each trial.
    """

    def __init__(self, cfg: TuneConfig, *, build_config: ConfigFn, train: TrainFn, suggest: SuggestFn,
                 out_dir: Path, tracking: StudyTracking,
                 on_trial: Callable[[TrialReport], None] | None = None) -> None:
        self.cfg = cfg
        self.build_config = build_config
        self.train = train
        self.suggest = suggest
        self.out_dir = out_dir
        self.tracking = tracking
        self.on_trial = on_trial
        self.reports: list[TrialReport] = []
        self.fatal: CoregError | None = None

    def _report(self, trial: optuna.Trial, state: str, value: float | None, run_id: str | None,
                message: str = "") -> None:
        rep = TrialReport(number=trial.number, state=state, value=value, params=dict(trial.params),
                          run_id=run_id, message=message)
        self.reports.append(rep)
        if self.on_trial is not None:
            self.on_trial(rep)

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna

        trial.set_user_attr("worker", worker_id())
        tags = {STUDY_TAG: self.cfg.study_name, ROLE_TAG: "trial", "optuna.trial_number": trial.number,
                "optuna.study": self.cfg.study_name, "optuna.storage": redact_url(self.cfg.storage)}
        callback = PruningCallback(trial, self.cfg.metric)
        pruned: optuna.TrialPruned | None = None
        value = math.nan
        with self.tracking.trial(number=trial.number, tags=tags) as tracker:
            run_id = tracker.run_id
            if run_id:
                trial.set_user_attr("mlflow_run_id", run_id)
            try:
                overrides = list(self.suggest(self.cfg.method, trial))
                trial.set_user_attr("overrides", overrides)
                tracker.set_tags({"optuna.overrides": " ".join(overrides) or "-"})
                tracker.log_params({f"optuna.{k}": v for k, v in trial.params.items()})
                tcfg = self.build_config(overrides)
                result = self.train(cfg=tcfg, out_dir=self.out_dir / f"trial-{trial.number}", tracker=tracker,
                                    callbacks=[callback])
                name = resolve_metric(self.cfg.metric, result.metrics)
                value = float(result.metrics[name])
                if not math.isfinite(value):
                    raise CoregError(f"selection metric {name} is {value} after the last epoch")
            except optuna.TrialPruned as e:
                pruned = e
                tracker.set_tags({"optuna.state": "PRUNED", "optuna.pruned": str(e)})
            except MetricUnavailable as e:
                # A setup error, not a bad trial: recorded as FAIL, then run_study stops the study.
                self.fatal = e
                trial.set_user_attr("fail_reason", str(e))
                tracker.set_tags({"optuna.state": "FAIL", "error": str(e)})
                self._report(trial, "FAIL", None, run_id, str(e))
                raise
            except TRIAL_ERRORS as e:
                msg = _one_line(e)
                trial.set_user_attr("fail_reason", msg)
                tracker.set_tags({"optuna.state": "FAIL", "error": msg})
                logger.warning("trial %d failed: %s", trial.number, msg)
                self._report(trial, "FAIL", None, run_id, msg)
                raise  # inside the run: MLflow marks it FAILED; Optuna records FAIL (it is in `catch`)
            else:
                tracker.set_tags({"optuna.state": "COMPLETE", "selection_metric": name})
                tracker.log_metrics({"objective": value})
                if REGISTER_METRIC_ATTR not in trial.study.user_attrs:
                    trial.study.set_user_attr(REGISTER_METRIC_ATTR, f"final_{name}")
        if pruned is not None:
            self.tracking.set_status(run_id, "KILLED")
            last = callback.last[2] if callback.last else None
            self._report(trial, "PRUNED", last, run_id, str(pruned))
            raise pruned
        self._report(trial, "COMPLETE", value, run_id)
        return value


def _claim_out_dir(out_dir: Path, cfg: TuneConfig) -> None:
    """Keep two studies from sharing trial folders (``trial-<n>`` would collide)."""
    from coreg.data.annotations import atomic_write_bytes

    marker = out_dir / STUDY_FILE
    mine = {"study_name": cfg.study_name, "storage": redact_url(cfg.storage)}
    if marker.exists():
        try:
            old = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            old = {}
        if old and (old.get("study_name"), old.get("storage")) != (mine["study_name"], mine["storage"]):
            raise CoregError(f"{out_dir} holds trials of study {old.get('study_name')} ({old.get('storage')}); "
                             "use another --out for this study")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(marker, json.dumps(mine).encode())


def study_figures(study: optuna.Study) -> dict[str, Any]:
    """Matplotlib figures of the study: optimisation history, and parameter importances.

    Importances need at least two completed trials with a varying parameter; a plot that cannot
    be drawn is skipped (logged at INFO).
    """
    import matplotlib
    import optuna
    from optuna.trial import TrialState

    matplotlib.use("Agg")
    figs: dict[str, Any] = {}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if complete:
            try:
                ax = optuna.visualization.matplotlib.plot_optimization_history(study)
                figs["optimization_history.png"] = ax.figure
            except (ValueError, RuntimeError, ImportError) as e:
                logger.info("no optimisation-history plot: %s", e)
        varying = {k for t in complete for k in t.params if len({str(u.params.get(k)) for u in complete}) > 1}
        if len(complete) >= 2 and varying:
            try:
                ax = optuna.visualization.matplotlib.plot_param_importances(study)
                figs["param_importances.png"] = ax.figure
            except (ValueError, RuntimeError, ImportError, ZeroDivisionError) as e:
                logger.info("no parameter-importance plot: %s", e)
        else:
            logger.info("no parameter-importance plot: needs >= 2 completed trials with a varying parameter")
    return figs


def _finish_parent(tracker: Tracker, study: optuna.Study, summary: StudySummary) -> None:
    """Best trial, counts, trial table and plots on the parent run."""
    counts = summary.counts
    tracker.log_metrics({f"n_{k.lower()}": float(v) for k, v in counts.items()}
                        | {"n_trials_total": float(sum(counts.values()))},
                        step=sum(counts.values()))
    tracker.set_tags({"n_trials_target": summary.n_trials, "optuna.storage": summary.storage})
    if summary.best_trial is not None and summary.best_value is not None:
        tracker.log_metrics({"best_value": summary.best_value}, step=sum(counts.values()))
        tracker.set_tags({"best_trial": summary.best_trial, "best_value": f"{summary.best_value:.6g}",
                          **({"best_run": summary.best_run_id} if summary.best_run_id else {}),
                          **{f"best_param.{k}": v for k, v in summary.best_params.items()}})
        tracker.log_text(json.dumps({"trial": summary.best_trial, "value": summary.best_value,
                                     "run_id": summary.best_run_id, "params": summary.best_params},
                                    indent=2, default=str), "best_params.json")
    try:
        table = study.trials_dataframe()
        tracker.log_text(table.to_csv(index=False), "trials.csv")
    except (ImportError, ValueError) as e:
        logger.info("no trials table: %s", e)
    import matplotlib.pyplot as plt

    for fname, fig in study_figures(study).items():
        tracker.log_figure(fig, fname)
        summary.figures.append(fname)
        plt.close(fig)


def summarize(study: optuna.Study, cfg: TuneConfig, *, ran: list[TrialReport], parent_run_id: str | None,
              stopped: str) -> StudySummary:
    """Counts and best trial of ``study`` (best over COMPLETE trials of every worker)."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
    return StudySummary(
        study_name=cfg.study_name, storage=redact_url(cfg.storage), n_trials=cfg.n_trials,
        counts=state_counts(study), ran=list(ran),
        best_value=float(best.value) if best is not None and best.value is not None else None,
        best_params=dict(best.params) if best is not None else {},
        best_trial=best.number if best is not None else None,
        best_run_id=best.user_attrs.get("mlflow_run_id") if best is not None else None,
        parent_run_id=parent_run_id, stopped=stopped)


def run_study(cfg: TuneConfig, *, build_config: ConfigFn, train: TrainFn, out_dir: str | Path,
              suggest: SuggestFn | None = None, tracking: StudyTracking | None = None,
              study_attrs: dict[str, Any] | None = None,
              on_trial: Callable[[TrialReport], None] | None = None) -> StudySummary:
    """Run (or resume, or join) the study until it holds ``cfg.n_trials`` counted trials.

    Args:
        cfg: tune settings.
        build_config: overrides -> training config; called once with ``[]`` first, so a bad user
            ``--set`` fails here and not in every trial.
        train: trains one config (see :class:`TrainFn`).
        out_dir: trial folders ``trial-<n>`` go here (``study.json`` marks the owner study).
        suggest: the search space; default :func:`coreg.tuning.spaces.suggest`.
        tracking: default records nothing; the CLI passes :class:`MlflowStudyTracking`.
        study_attrs: settings stored on a new study and checked on a resumed one
            (``method``, ``metric``, ``data_fingerprint``, ``epochs``...).
        on_trial: called after each trial this process runs.

    Returns:
        The summary (see the module doc for what counts towards ``n_trials``).

    Raises:
        CoregError: bad settings, a study created for other settings, an unavailable metric.
    """

    suggest = suggest or resolve_suggest()
    base = build_config([])
    if base.val_fraction <= 0:
        raise CoregError("tuning selects on the validation hold-out: val_fraction must be > 0")
    out = Path(out_dir)
    attrs = {"method": cfg.method, "metric": cfg.metric, "epochs": base.epochs, "experiment": cfg.experiment,
             **(study_attrs or {})}
    if cfg.metric != "auto":
        attrs[REGISTER_METRIC_ATTR] = f"final_{cfg.metric}"
    study = open_study(cfg, warmup=base.warmup, epochs=base.epochs, attrs=attrs)
    _claim_out_dir(out, cfg)
    tracking = tracking or NullStudyTracking()
    objective = Objective(cfg, build_config=build_config, train=train, suggest=suggest, out_dir=out,
                          tracking=tracking, on_trial=on_trial)
    params = {"method": cfg.method, "metric": cfg.metric, "pruner": cfg.pruner, "sampler": "tpe",
              "direction": "maximize", "study_name": cfg.study_name, "storage": redact_url(cfg.storage),
              "epochs": base.epochs, "warmup": base.warmup, **{f"study.{k}": v for k, v in (study_attrs or {}).items()}}
    start = time.monotonic()
    stopped = "budget"
    in_a_row = 0
    wait_until: float | None = None
    with tracking.parent(params=params, study=study) as parent:
        while True:
            for dead in reclaim_dead_trials(study):
                _set_status_quietly(tracking, dead.user_attrs.get("mlflow_run_id"), "FAILED")
            timed_out = cfg.timeout is not None and time.monotonic() - start >= cfg.timeout
            if counted_trials(study) >= cfg.n_trials:
                # The budget may be reached only thanks to trials whose worker (on another host)
                # died: wait until each has finished or has gone a grace period without a heartbeat.
                pending = _unconfirmed_running(study)
                if wait_until is None and pending:
                    wait_until = time.monotonic() + GRACE_PERIOD_S + HEARTBEAT_S
                    logger.info("budget reached with %d trial(s) running in other workers; waiting up to %ds "
                                "to retry any whose worker is gone", len(pending), GRACE_PERIOD_S + HEARTBEAT_S)
                if not pending or timed_out or time.monotonic() >= (wait_until or 0.0):
                    break
                time.sleep(min(HEARTBEAT_S, 5))
                continue
            if timed_out:
                stopped = "timeout"
                break
            n_reports = len(objective.reports)
            study.optimize(objective, n_trials=1, catch=TRIAL_ERRORS, gc_after_trial=False)
            if objective.fatal is not None:
                raise objective.fatal
            last = objective.reports[-1].state if len(objective.reports) > n_reports else "FAIL"
            in_a_row = in_a_row + 1 if last == "FAIL" else 0
            if in_a_row >= cfg.max_failures:
                stopped = f"{in_a_row} failed trials in a row"
                logger.warning("stopping: %s (last: %s)", stopped, objective.reports[-1].message)
                break
        summary = summarize(study, cfg, ran=objective.reports, parent_run_id=parent.run_id, stopped=stopped)
        _finish_parent(parent, study, summary)
    return summary
