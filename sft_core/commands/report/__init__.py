"""``sft report``: one self-contained HTML page (plots embedded as PNG) of run folders and study
folders, attached to the CLI through ``sft_register_commands``; matplotlib (the ``report`` extra)
is imported only when a report is written. ``runs`` reads the folders, ``plots`` draws, ``page``
lays the page out.
"""

from __future__ import annotations

import click

import sys
from pathlib import Path

from ...host.hookspecs import hookimpl


def write_report(paths: list[str], output: str | None = None) -> str:
    """Write the report of the run or study folders ``paths`` to ``output`` (default: report.html
    in the one folder given, else in the working directory); returns its path."""
    from .page import build_report

    return build_report(list(paths), output)


@hookimpl
def sft_run_end(config, output_dir, results):
    """``trainer.report``: the run's report.html; a report that fails costs the run nothing."""
    if not config.trainer.report:
        return
    try:
        print(f"report: {write_report([str(output_dir)], str(Path(output_dir) / 'report.html'))}", file=sys.stderr)
    except Exception as exc:  # the model and results are written: say why the page is not
        print(f"warning: no report.html ({type(exc).__name__}: {exc})", file=sys.stderr)


@hookimpl
def sft_study_end(study_dir):
    """The study's report.html; the study's files are complete whether or not it can be written."""
    try:
        path = write_report([str(study_dir)], str(Path(study_dir) / "report.html"))
    except Exception as exc:  # e.g. matplotlib missing
        print(f"sft tune: no report ({type(exc).__name__}: {exc}); the study's files are complete", file=sys.stderr,
              flush=True)
        return
    print(f"sft tune: report: {path}", file=sys.stderr, flush=True)


@hookimpl
def sft_register_commands(cli):
    @cli.command("report")
    @click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
    @click.option("--output", "-o", type=click.Path(dir_okay=False),
                  help="The HTML file to write (default: report.html in the one folder given, else ./report.html).")
    def report_command(run_dirs, output):
        """Learning curves and results of run folders (several: overlaid and compared) or of an
        `sft tune` study folder, as one HTML file that opens from disk."""
        click.echo(write_report(list(run_dirs), output))
