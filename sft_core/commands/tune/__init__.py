"""``sft tune``: hyperparameter search on Optuna (the ``tune`` extra), attached to the CLI through
``sft_register_commands`` like ``sft serve``. ``space`` reads and checks a recipe's ``tune:``
section (no Optuna needed); ``study`` runs the trials, retrains the best and writes the results.
"""

from __future__ import annotations

import json

import click

from ...host.hookspecs import hookimpl


def tune(config, trials=None, timeout_minutes=None, study_dir=None, overrides=(), host=None) -> dict:
    """``sft tune`` from Python: ``config`` is the recipe (a path or a list of paths); returns the
    summary: the best trial, its values, its validation score and the retrained model's evaluation."""
    from .study import tune as run_study

    return run_study([config] if isinstance(config, str) else list(config), trials, timeout_minutes, study_dir,
                     list(overrides), host)


@hookimpl
def sft_register_commands(cli):
    @cli.command("tune")
    @click.option("--config", "configs", multiple=True, required=True, type=click.Path(),
                  help="The recipe: a config file with a `tune:` section (its search space); repeatable.")
    @click.option("--trials", type=int, help="Trials the study runs in all, a restart included (default: tune.trials).")
    @click.option("--timeout-minutes", type=float, help="Start no new trial after this many minutes "
                  "(default: tune.timeout_minutes); the best settings are still retrained.")
    @click.option("--study-dir", type=click.Path(file_okay=False), help="The study folder (default: OUTPUT_DIR-tune); "
                  "started again with the same folder, the study continues.")
    @click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
    @click.pass_context
    def tune_command(ctx, configs, trials, timeout_minutes, study_dir, overrides):
        """Search hyperparameters of a recipe with Optuna (TPE, median pruning).

        Trials train on part of data.train and are scored on the rest (tune.validation_fraction);
        the evaluation set is never seen by the search. The best settings are then retrained on all
        of data.train and evaluated once on data.eval. Writes best.yaml (for `sft run --config`),
        trials.csv and report.html into the study folder. KEY=VALUE overrides recipe keys, tune.*
        keys included (e.g. tune.seed=1).
        """
        from ..common import host_of
        from ...errors import TrainingInterrupted

        try:
            summary = tune(list(configs), trials, timeout_minutes, study_dir, list(overrides), host_of(ctx))
        except TrainingInterrupted as exc:  # not "--resume": the study continues when started again
            click.echo(f"sft tune interrupted by {exc.signal_name}; the trial that was running will run again: "
                       "start the same command to continue the study (finished trials are kept)", err=True)
            ctx.exit(exc.exit_code)
        click.echo(json.dumps(summary, indent=2))
