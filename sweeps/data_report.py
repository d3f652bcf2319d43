"""A sweep's data report: computed once on the driver before Ray starts, not once per trial.

Reads every source and the audio files' headers (no decoding) and loads only the model's
processor, so it costs seconds where a trial's data loading costs a decode of everything.
A strict_text failure, an unreadable source or (trials on this machine) a bad row stops the
sweep here, before any trial, with the rows listed as a run lists them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainable.config import TrialConfig
from trainable.config_io import ConfigError

REPORT_FILE = "data_report.json"


def report_sweep_data(trial: TrialConfig, results_dir: Path, check_rows_here: bool = True) -> dict[str, Any]:
    """Write ``results_dir/data_report.json``, print the report, and warn or (strict_text)
    refuse labels with unknown tokens. ``trial`` is the resolved fixed recipe.

    ``check_rows_here``: refuse bad rows here, as each trial would (``trainable.data_report.check_rows``).
    Off when the trials run on a cluster, whose workers may hold audio this machine lacks."""
    from trainable.data_report import TextError, check_labels, check_rows, format_report, report_from_config, undecoded_views
    from trainable.files import atomic_write_json
    from trainable.manifest import ManifestError

    try:
        views = undecoded_views(trial)
        report = report_from_config(trial, views=views)
    except (ManifestError, OSError) as error:
        raise ConfigError(f"trial data: {error}") from None
    atomic_write_json(Path(results_dir) / REPORT_FILE, report)
    print(format_report(report))
    if check_rows_here:
        try:
            check_rows(views, trial.on_bad_row, skip_hint="set trial.on_bad_row=skip")
        except ManifestError as error:
            raise ConfigError(f"trial data: {error}") from None
    try:
        warning = check_labels(report, trial.strict_text)
    except TextError as error:
        raise ConfigError(f"trial.strict_text: {error}") from None
    if warning:
        print(f"warning: {warning}")
    return report


def summary_section(results_dir: Path) -> str:
    """The data report as a summary.md section, when the sweep wrote one ("" otherwise)."""
    from trainable.config_io import read_json
    from trainable.data_report import format_report

    path = Path(results_dir) / REPORT_FILE
    if not path.is_file():
        return ""
    return f"\n## Data\n\n```\n{format_report(read_json(path))}\n```\n\nFull report: `{REPORT_FILE}`.\n"
