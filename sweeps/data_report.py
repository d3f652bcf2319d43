"""A sweep's data report: computed once on the driver before Ray starts, not once per trial.

Reads every source and the audio files' headers (no decoding) and loads only the model's
processor, so it costs seconds where a trial's data loading costs a decode of everything.
A strict_text failure or an unreadable source stops the sweep here, before any trial.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainable.config import TrialConfig
from trainable.config_io import ConfigError

REPORT_FILE = "data_report.json"


def report_sweep_data(trial: TrialConfig, results_dir: Path) -> dict[str, Any]:
    """Write ``results_dir/data_report.json``, print the report, and warn or (strict_text)
    refuse labels with unknown tokens. ``trial`` is the resolved fixed recipe."""
    from trainable.data_report import TextError, check_labels, format_report, report_from_config
    from trainable.files import atomic_write_json
    from trainable.manifest import ManifestError

    try:
        report = report_from_config(trial)
    except (ManifestError, OSError) as error:
        raise ConfigError(f"trial data: {error}") from None
    atomic_write_json(Path(results_dir) / REPORT_FILE, report)
    print(format_report(report))
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
