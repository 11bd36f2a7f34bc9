"""The study folder of ``sft tune``: its file names, and reading it back (``sft report``).

``sft tune`` writes it and ``sft report`` reads it; both build on this module, not on each other.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml

DB_FILE = "study.db"
STUDY_NAME = "sft-tune"
SETTINGS_FILE = "study.json"  # the recipe and search the study was started with: a restart must match
FINAL_FILE = "final.json"  # the retrained best settings' evaluation
TRIALS_CSV = "trials.csv"
IMPORTANCE_FILE = "importance.json"
BEST_YAML = "best.yaml"


def load_summary(folder: Path) -> dict:
    """What a study folder holds, for ``sft report``: settings, trials (from trials.csv), the
    parameter importance and the retrained best's evaluation, each None when absent."""
    def read(name: str):
        path = folder / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    trials = []
    if (folder / TRIALS_CSV).is_file():
        with (folder / TRIALS_CSV).open(encoding="utf-8", newline="") as handle:
            trials = list(csv.DictReader(handle))
    best_yaml = folder / BEST_YAML
    return {"settings": read(SETTINGS_FILE), "trials": trials, "importance": read(IMPORTANCE_FILE),
            "final": read(FINAL_FILE), "best": yaml.safe_load(best_yaml.read_text()) if best_yaml.is_file() else None}


def is_study_folder(path: Path) -> bool:
    return (path / SETTINGS_FILE).is_file()

