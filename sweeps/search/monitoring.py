"""What a running sweep shows, through Ray's and Tune's own mechanisms.

- The console: Tune's ``CLIReporter`` with the searched parameters and each eval set's
  latest tuned WER as columns, and a best-trial line that names the trial, its searched
  parameters and its select-set WER (not the whole recipe), among the trials that could win.
- Ray metrics (``ray.util.metrics``): each trial's step, training loss and WER per eval set
  as gauges tagged with the sweep, the trial and its searched parameters, exported by each
  node's metrics agent for Prometheus, and so charted by Grafana in the dashboard.
- The dashboard's Actors page: each trial's actor is labelled with its trial id and
  searched parameters (the actor's repr, which Ray also puts before the trial's log lines).
"""

from __future__ import annotations

import numbers
import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

from sweeps.search.config import SweepConfig
from trainable.config import target_module_set_name
from trainable.metrics import PRIMARY_TUNED, metric_name, parse_metric_name

# Ray 2.60's default console output ignores RunConfig(progress_reporter=...) and infers its
# columns (the first few metrics, no parameters of a define-by-run space); Tune's own
# configurable reporter is used when this switch is off. Ray reads it when a run starts.
NEW_OUTPUT_SWITCH = "RAY_AIR_NEW_OUTPUT"
# The console table is printed at most this often (seconds), and whenever the run ends.
CONSOLE_EVERY_S = 30

# Ray exports user metrics with a "ray_" prefix: ray_sweep_trial_wer, ...
STEP_GAUGE, LOSS_GAUGE, WER_GAUGE = "sweep_trial_step", "sweep_trial_train_loss", "sweep_trial_wer"
# Ray's metrics agent forgets a gauge value that is not set again within two export
# intervals (at least 2 s; ray/_private/telemetry/open_telemetry_metric_recorder.py), and
# a trial reports only every eval_every steps: its last values are set again this often,
# so each trial is one unbroken series while it runs and ends a few seconds after it.
REFRESH_S = 1.0


# --------------------------------------------------------------------------- the console


def progress_reporter(sweep: SweepConfig, parameters: tuple[str, ...], best_among: Callable[[Mapping[str, Any]], bool] | None = None):
    """Tune's CLIReporter: one row per trial with ``parameters`` (the searched fields) and
    its latest step and tuned WER per eval set; finished trials sorted by the sweep's metric.
    The metric and mode come from the TuneConfig, as Tune requires. ``best_among``: which
    trials, by their latest report, Tune's "Current best trial" line may name (the search:
    those that could win, so the line never names one the closing printout cannot). None
    (the race) drops the line: the race's winner is the best mean over seeds, decided when
    every run is in, and the best single run would name a lucky seed."""
    return reporter_class(best_among)(
        parameter_columns=list(parameters),
        metric_columns=console_metrics(sweep),
        sort_by_metric=True,
        max_report_frequency=CONSOLE_EVERY_S,
        print_intermediate_tables=True,
    )


def reporter_class(best_among: Callable[[Mapping[str, Any]], bool] | None) -> type:
    """A CLIReporter whose best-trial line chooses among the trials ``best_among`` passes; none without it."""
    from ray import tune

    class SweepReporter(tune.CLIReporter):
        def _current_best_trial(self, trials):
            if best_among is None:
                return None, None
            return super()._current_best_trial([trial for trial in trials if best_among(trial.last_result or {})])

    return SweepReporter


def console_metrics(sweep: SweepConfig) -> dict[str, str]:
    """Metric columns of the console table: ``{reported name: header}``; the select set's
    WER first (``eval_wer``, what the sweep optimises), then every other eval set's."""
    columns = {"step": "step", PRIMARY_TUNED: f"{sweep.trial.primary_eval} WER"}
    for name, _ in sweep.trial.eval_manifests:
        if name != sweep.trial.primary_eval:
            columns[metric_name(name, "tuned")] = f"{name} WER"
    return columns


@contextmanager
def tune_console() -> Iterator[None]:
    """Within it, Tune prints through the reporter in RunConfig (``progress_reporter``);
    a switch the user set is left as it is."""
    if NEW_OUTPUT_SWITCH in os.environ:
        yield
        return
    os.environ[NEW_OUTPUT_SWITCH] = "0"
    try:
        yield
    finally:
        os.environ.pop(NEW_OUTPUT_SWITCH, None)


# --------------------------------------------------------------------------- trial labels


def parameter_text(value: Any) -> str:
    """A parameter value as it reads in a label, a metric tag or an error: 3 significant
    digits, target-module sets by name."""
    if isinstance(value, (tuple, list)):
        return target_module_set_name(tuple(value))
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def searched_values(config: Mapping[str, Any], searched: tuple[str, ...]) -> dict[str, str]:
    """The searched fields of a trial's Tune config, as text (a conditional one it lacks is left out)."""
    return {name: parameter_text(config[name]) for name in searched if name in config}


def trial_label(trial_id: str, config: Mapping[str, Any], searched: tuple[str, ...]) -> str:
    values = " ".join(f"{name}={value}" for name, value in searched_values(config, searched).items())
    return f"trial {trial_id} {values}".strip()


class TrialActorLabel:
    """A Tune trainable mixin (``trainable.__mixins__``): the trial's actor is named by
    ``trial_label``. Tune gives a function trainable's actor the repr ``_name`` (the
    function's name, the same for every trial); Ray shows an actor's repr in the dashboard's
    Actors table ("Repr") and before its log lines. ``searched`` is set per sweep
    (``labelled_actor``)."""

    searched: tuple[str, ...] = ()

    def setup(self, config: dict, *args: Any, **kwargs: Any) -> Any:
        self._name = trial_label(self.trial_id, config, self.searched)
        return super().setup(config, *args, **kwargs)


def labelled_actor(searched: tuple[str, ...]) -> type:
    return type("TrialActorLabel", (TrialActorLabel,), {"searched": tuple(searched)})


# --------------------------------------------------------------------------- Ray metrics


class TrialGauges:
    """A trial's step, training loss and WER per eval set and system (baseline, tuned) as
    Ray gauges, tagged with the sweep, the trial and the searched parameters' values."""

    def __init__(self, sweep: str, trial_id: str, parameters: Mapping[str, str]):
        from ray.util.metrics import Gauge

        self.tags = {"sweep": sweep, "trial": trial_id, **parameters}
        keys = tuple(self.tags)
        self.gauges = {
            STEP_GAUGE: Gauge(STEP_GAUGE, "training step of a sweep trial's latest report", tag_keys=keys),
            LOSS_GAUGE: Gauge(LOSS_GAUGE, "mean training loss over the eval_every steps before the trial's latest eval", tag_keys=keys),
            WER_GAUGE: Gauge(WER_GAUGE, "corpus WER of an eval set (system: baseline = without the adapter, tuned = with it) at the trial's latest eval",
                             tag_keys=keys + ("eval_set", "system")),
        }
        for gauge in self.gauges.values():
            gauge.set_default_tags(self.tags)
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._refresher = threading.Thread(target=self._refresh, name="trial-gauges", daemon=True)

    def record(self, metrics: Mapping[str, Any]) -> None:
        """Set the gauges from one report; a metric the report lacks keeps its last value."""
        with self._lock:
            self.values.update(gauge_readings(metrics))
            self._publish()

    def __enter__(self) -> "TrialGauges":
        self._refresher.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stopped.set()
        self._refresher.join()

    def _refresh(self) -> None:
        while not self._stopped.wait(REFRESH_S):
            with self._lock:
                self._publish()

    def _publish(self) -> None:
        for (gauge, tags), value in self.values.items():
            self.gauges[gauge].set(value, tags=dict(tags))


def gauge_readings(metrics: Mapping[str, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(gauge, extra tags): value}`` from a trial's report: its step, training loss, and
    each eval set's baseline and tuned WER."""
    readings = {}
    for key, gauge in (("step", STEP_GAUGE), ("train_loss", LOSS_GAUGE)):
        if _number(metrics.get(key)):
            readings[(gauge, ())] = float(metrics[key])
    for name, value in metrics.items():
        parsed = parse_metric_name(name)
        if parsed and parsed[2] == "wer" and _number(value):
            readings[(WER_GAUGE, (("eval_set", parsed[0]), ("system", parsed[1])))] = float(value)
    return readings


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
