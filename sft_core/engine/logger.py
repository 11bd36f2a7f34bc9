"""Where figures go: ``metrics.jsonl`` (every logged figure, one JSON object a line), TensorBoard
when it is installed, and a tqdm progress bar. Only the main process writes."""

from __future__ import annotations

import json
import time
from pathlib import Path


class MetricsLogger:
    def __init__(self, output_dir: Path, enabled: bool, append: bool):
        self.enabled = enabled
        self._file = None
        self._tb = None
        if not enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(output_dir / "metrics.jsonl", "a" if append else "w", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(output_dir / "tensorboard"))
        except ImportError:  # tensorboard is optional
            self._tb = None

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            step = record.get("step", 0)
            for key, value in record.items():
                if key not in ("step", "time") and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()


def progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    # leave `disable` unset when enabled, so that TQDM_DISABLE=1 in the environment still works
    options = {} if enabled else {"disable": True}
    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True, **options)
