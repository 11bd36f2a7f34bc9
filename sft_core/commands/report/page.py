"""The report page: sections of tables and figures (PNG, base64-embedded) in one HTML file that
opens from disk, with no script and nothing fetched."""

from __future__ import annotations

import base64
import html
import json
import math
import struct
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ...errors import SFTError
from ...engine.files import write_text as write_text_atomic
from . import plots
from .runs import RunData, differing_settings, flat_config, read_run, unique_names

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1100px;color:#1b1f24;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem;margin-top:2.2rem}
h3{font-size:1.05rem;margin-top:1.5rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.88rem}
th,td{border:1px solid #d0d7de;padding:.25rem .55rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.figures{display:flex;flex-wrap:wrap;gap:1rem}
figure{margin:0}figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{font-size:.8rem;color:#57606a}
.note{color:#57606a;font-size:.85rem}code{background:#f6f8fa;padding:0 .2rem}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return _esc(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return _esc(value)
        if value and abs(value) < 0.01:  # a learning rate, say: significant digits, not 0.0000
            return f"{value:.3g}"
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return _esc(value)


def _duration(seconds: Any) -> str:
    """Training time as people read it: 45.2 s, 3 min 05 s, 1 h 02 min (not 185.4821)."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _rate(value: Any) -> Any:
    return round(value, 1) if isinstance(value, float) else value


def _png_size(data: bytes) -> tuple[int, int]:
    return struct.unpack(">II", data[16:24])


def figure(png: bytes, caption: str) -> str:
    width, height = _png_size(png)
    encoded = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{_esc(caption)}" width="{width}" height="{height}" '
            f'src="data:image/png;base64,{encoded}"><figcaption>{_esc(caption)}</figcaption></figure>')


def table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(
        f'<td class="num">{_num(c)}</td>' if isinstance(c, (int, float)) and not isinstance(c, bool)
        else f"<td>{_esc('' if c is None else c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figures(items: list[str]) -> str:
    return f'<div class="figures">{"".join(items)}</div>' if items else ""


# --- run folders ------------------------------------------------------------------------------

def _summary(runs: list[RunData]) -> str:
    metrics: list[str] = []
    for run in runs:
        metrics += [m for m in run.final_metrics() if m not in metrics]
    rows = []
    for run in runs:
        train = run.train_results or {}
        final = run.final_metrics()
        rows.append([run.name, run.task, run.config.get("model", ""), train.get("status", "—"),
                     train.get("train_steps", "—"), _duration(train.get("train_runtime")),
                     _rate(train.get("train_samples_per_second", "—")), *[final.get(m, "") for m in metrics]])
    return table(["run", "task", "model", "status", "steps", "training time", "samples/s", *metrics], rows)


def _settings(runs: list[RunData]) -> str:
    keys = differing_settings(runs)
    if not keys:
        return '<p class="note">The runs have the same settings (output folders aside).</p>'
    flats = [flat_config(r.config) for r in runs]
    return table(["setting", *[r.name for r in runs]],
                 [[k, *[json.dumps(f.get(k)) if isinstance(f.get(k), (list, dict)) else f.get(k) for f in flats]]
                  for k in keys])


def _training_curves(runs: list[RunData]) -> list[str]:
    out = []
    logged = [r for r in runs if r.train_log]
    if not logged:
        return out
    def series(key):
        return [(r.name, [x["step"] for x in r.train_log], [x.get(key) for x in r.train_log]) for r in logged]
    out.append(figure(plots.lines(series("loss"), "Training loss", "step", "loss"), "training loss against step"))
    out.append(figure(plots.lines(series("lr"), "Learning rate", "step", "learning rate"), "learning rate against step"))
    if any("samples_per_second" in x for r in logged for x in r.train_log):
        out.append(figure(plots.lines(series("samples_per_second"), "Training throughput", "step", "samples/s"),
                          "training samples per second against step"))
    return out


def constant_metrics(runs: list[RunData]) -> dict[str, Any]:
    """Metrics that had one value at every evaluation of every run (a count of answer tokens, say):
    a flat line says nothing, so they are listed in a note, not plotted."""
    values: dict[str, set] = {}
    counts: dict[str, int] = {}
    for run in runs:
        names = run.metric_names()
        for evaluation in run.evals:
            for name in names:
                if name in evaluation:
                    values.setdefault(name, set()).add(json.dumps(evaluation[name]))
                    counts[name] = counts.get(name, 0) + 1
    return {name: json.loads(next(iter(v))) for name, v in values.items() if len(v) == 1 and counts[name] > 1}


def _eval_curves(runs: list[RunData], skip: set[str]) -> list[str]:
    names: list[str] = []
    for run in runs:
        names += [m for m in run.metric_names() if m not in names and m not in skip]
    out = []
    for name in names:
        with_values = [r for r in runs if any(name in e for e in r.evals)]
        if not with_values:
            continue
        by_step = [(r.name, [e["step"] for e in r.evals if name in e], [e[name] for e in r.evals if name in e])
                   for r in with_values]
        by_time = [(r.name, [e.get("train_seconds") for e in r.evals if name in e], [e[name] for e in r.evals if name in e])
                   for r in with_values]
        out.append(figure(plots.lines(by_step, f"{name} (evaluation)", "step", name, markers=True),
                          f"evaluation {name} against step"))
        out.append(figure(plots.lines(by_time, f"{name} against training time", "training seconds", name, markers=True),
                          f"evaluation {name} against training time"))
    return out


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, bool)) and not isinstance(value, float)


def _confusion(run: RunData) -> str | None:
    """Classification: the confusion matrix of predictions.jsonl (records with ``label`` and ``prediction``)."""
    records = [r for r in (run.predictions or []) if isinstance(r, dict) and "label" in r and "prediction" in r]
    if not records or not all(_scalar(r["label"]) and _scalar(r["prediction"]) for r in records):
        return None  # no predictions, or multi-label lists / regression scores
    labels = sorted({str(r["label"]) for r in records} | {str(r["prediction"]) for r in records})
    if len(labels) > 50:
        return None
    index = {name: i for i, name in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    for r in records:
        counts[index[str(r["label"])]][index[str(r["prediction"])]] += 1
    return figure(plots.confusion(labels, counts, f"Confusion matrix: {run.name}"),
                  f"confusion matrix of {run.name} ({len(records)} evaluation examples)")


def _task_views(runs: list[RunData]) -> tuple[list[str], set[str]]:
    """What each task's users look at, found from what the runs hold; returns (figures, metrics
    that those figures show, left out of the generic curves)."""
    out: list[str] = []
    shown: set[str] = set()
    for run in runs:
        matrix = _confusion(run)
        if matrix:
            out.append(matrix)
    finals = {r.name: r.final_metrics() for r in runs}
    types = sorted({k[len("f1_"):] for f in finals.values() for k in f if k.startswith("f1_")})
    if types:  # NER: F1 of each entity type
        out.append(figure(plots.bars(types, [(name, [f.get(f"f1_{t}", 0.0) for t in types]) for name, f in finals.items()],
                                     "F1 per entity type", "F1"), "entity-level F1 of each type (final evaluation)"))
        shown |= {f"f1_{t}" for t in types}
    if any("bleu" in e for r in runs for e in r.evals):  # translation: BLEU against training time
        out.append(figure(plots.lines([(r.name, [e.get("train_seconds") for e in r.evals if "bleu" in e],
                                        [e["bleu"] for e in r.evals if "bleu" in e]) for r in runs],
                                      "BLEU against training time", "training seconds", "BLEU", markers=True),
                          "BLEU against training time"))
    qa = [(name, f) for name, f in finals.items() if "exact_match" in f and "f1" in f]
    if qa:  # extractive QA: exact match and F1
        out.append(figure(plots.bars(["exact_match", "f1"], [(name, [f["exact_match"], f["f1"]]) for name, f in qa],
                                     "Exact match and F1", "score"), "exact match and F1 (final evaluation)"))
    return out, shown


#: Sample generations shown per run (the first ones of its predictions file).
SAMPLE_GENERATIONS = 10


def _generations(run: RunData) -> str | None:
    """Generative tasks (instruct): the first generations with their prompts and references, the
    thing to read before any figure."""
    records = [r for r in (run.predictions or []) if isinstance(r, dict) and "generation" in r and "prompt" in r]
    if not records:
        return None
    rows = [[r["prompt"], r["generation"], " | ".join(map(str, r.get("references") or []))]
            for r in records[:SAMPLE_GENERATIONS]]
    return (f"<h3>Sample generations: {_esc(run.name)} (the first {len(rows)} of {len(records)})</h3>"
            + table(["prompt", "generation", "reference"], rows))


def run_sections(runs: list[RunData]) -> str:
    parts = ["<h2>Results</h2>", _summary(runs)]
    if len(runs) > 1:
        parts += ["<h3>Settings that differ</h3>", _settings(runs)]
    views, shown = _task_views(runs)
    generations = [g for g in map(_generations, runs) if g]
    if views or generations:
        parts += ["<h2>Task views</h2>", _figures(views), *generations]
    parts += ["<h2>Training</h2>", _figures(_training_curves(runs)) or '<p class="note">No training log.</p>']
    constant = constant_metrics(runs)
    curves = _eval_curves(runs, shown | set(constant))
    parts += ["<h2>Evaluation</h2>", _figures(curves) or '<p class="note">No evaluation during training.</p>']
    if constant:
        parts.append('<p class="note">The same at every evaluation, so not plotted: '
                     + ", ".join(f"{_esc(k)} {_num(v)}" for k, v in constant.items()) + ".</p>")
    notes = [n for r in runs for n in r.notes]
    if notes:
        parts.append("<ul>" + "".join(f'<li class="note">{_esc(n)}</li>' for n in notes) + "</ul>")
    return "".join(parts)


# --- study folders ----------------------------------------------------------------------------

def _float(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _param_value(text: str) -> Any:
    value = _float(text)
    if value is None:
        return text
    return int(value) if value == int(value) and "." not in text and "e" not in text.lower() else value


def study_section(folder: Path) -> tuple[str, RunData | None]:
    from ..study_folder import load_summary

    summary = load_summary(folder)
    settings = summary["settings"] or {}
    tune = settings.get("tune", {})
    metric, direction = settings.get("metric", "score"), settings.get("direction", "higher")
    space = tune.get("space", {})
    trials = summary["trials"]
    states = [t["state"] for t in trials]
    parts = [f"<h2>Study {_esc(folder)}</h2>",
             table(["setting", "value"], [["task", settings.get("config", {}).get("task")],
                                          ["metric", f"{metric} ({direction} is better)"],
                                          ["validation split", f"{tune.get('validation_fraction')} of data.train, seed "
                                                               f"{tune.get('seed')}"],
                                          ["pruner", tune.get("pruner")],
                                          ["trials", ", ".join(f"{states.count(s)} {s}" for s in
                                                               ("complete", "pruned", "fail") if states.count(s))]])]
    parts += ["<h3>Search space</h3>", table(["key", "distribution", "values"],
                                             [[k, *next(iter(v.items()))] for k, v in space.items()])]
    final = summary["final"]
    if final:
        rows = [[k, v] for k, v in final.get("params", {}).items()]
        rows.append([f"{metric}, validation split", final.get("validation", {}).get(metric)])
        rows += [[f"{k}, evaluation set (once)", v] for k, v in (final.get("eval") or {}).items()
                 if k not in ("eval_samples", "eval_runtime", "eval_samples_per_second", "step")]
        parts += [f"<h3>Best: trial {_esc(final.get('best_trial'))}, retrained on all of data.train</h3>",
                  table(["", "value"], rows)]
    figures = []
    if trials:
        numbers = [int(t["number"]) for t in trials]
        values = [_float(t["value"]) for t in trials]
        figures.append(figure(plots.trial_history(numbers, values, states, direction == "higher", metric),
                              "each trial's score on the validation split, and the best so far"))
    importance = (summary["importance"] or {}).get("importance")
    if importance:
        names = list(importance)
        figures.append(figure(plots.bars(names, [("importance", [importance[n] for n in names])],
                                         "Parameter importance", f"share of the variance of {metric}", horizontal=True),
                              f"parameter importance ({summary['importance'].get('method', '')})"))
    for name, spec in space.items():
        done = [t for t in trials if t["state"] == "complete" and _float(t["value"]) is not None and t.get(name) != ""]
        if len(done) >= 2:
            figures.append(figure(plots.parameter_scatter(name, [_param_value(t[name]) for t in done],
                                                          [_float(t["value"]) for t in done],
                                                          "log_uniform" in spec, metric), f"{name} against {metric}"))
    parts.append(_figures(figures))
    trial_runs = []
    for t in trials:
        path = folder / "trials" / f"trial-{int(t['number']):04d}"
        if (path / "metrics.jsonl").is_file():
            trial_runs.append(read_run(path, f"trial {t['number']}"))
    curves = [r for r in trial_runs if any(metric in e for e in r.evals)]
    if curves:
        parts.append(_figures([figure(plots.lines(
            [(r.name, [e.get("step") for e in r.evals if metric in e], [e[metric] for e in r.evals if metric in e])
             for r in curves], f"{metric} of every trial (validation split)", "step", metric, markers=True),
            f"{metric} of each trial at each evaluation")]))
    names = list(space)
    parts += ["<h3>Trials</h3>", table(["trial", "state", metric, *names, "seconds", "note"], [
        [int(t["number"]), t["state"], _float(t["value"]), *[_param_value(t.get(n, "")) for n in names],
         _float(t.get("seconds")), t.get("error") or ("interrupted" if t.get("interrupted") else "")
         or (f"pruned after {t['pruned_at']} examples" if t.get("pruned_at") else "")] for t in trials])]
    best_dir = folder / "best"
    best = read_run(best_dir, "best (retrained)") if (best_dir / "metrics.jsonl").is_file() else None
    return "".join(parts), best


# --- the page ---------------------------------------------------------------------------------

def build_report(paths: list[str], output: str | None = None) -> str:
    from ..study_folder import is_study_folder

    if not paths:
        raise SFTError("give at least one run folder (or study folder)")
    folders = [Path(p) for p in paths]
    for folder in folders:
        if not folder.is_dir():
            raise SFTError(f"{folder}: no such folder (give run folders written by `sft run`, or a study folder "
                           "of `sft tune`)")
    plots._figure()  # matplotlib missing: say so before reading anything
    sections: list[str] = []
    runs: list[RunData] = []
    plain = [f for f in folders if not is_study_folder(f)]
    for folder in folders:
        if is_study_folder(folder):
            text, best = study_section(folder)
            sections.append(text)
            if best is not None:
                runs.append(best)
    runs += [read_run(p, name) for p, name in zip(plain, unique_names(plain))]
    if runs:
        sections.append(run_sections(runs))
    title = "sft report: " + ", ".join(f.name or str(f) for f in folders)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{_esc(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n<h1>{_esc(title)}</h1>\n"
            f'<p class="note">Written by <code>sft report</code> on {stamp} from {len(folders)} folder(s).</p>\n'
            + "\n".join(sections) + "\n</body>\n</html>\n")
    target = Path(output) if output else (folders[0] / "report.html" if len(folders) == 1 else Path("report.html"))
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, page)
    return str(target)
