"""Constrained decoding: the most probable tag sequence among those that are valid IOB2."""

from __future__ import annotations

import numpy as np

from .schemes import allowed_transitions


class IOB2Viterbi:
    """Viterbi over per-word log-probabilities with hard IOB2 constraints (I-X only after B-X/I-X)."""

    def __init__(self, labels: list[str]):
        start, transitions = allowed_transitions(labels)
        self.start = np.where(start, 0.0, -np.inf)
        self.transitions = np.where(transitions, 0.0, -np.inf)  # [from, to]

    def decode(self, log_probs: np.ndarray) -> list[int]:
        """Label ids of the best valid path for ``log_probs`` of shape [words, labels]."""
        n = len(log_probs)
        if n == 0:
            return []
        score = self.start + log_probs[0]
        back = np.zeros((n, log_probs.shape[1]), dtype=np.int64)
        for i in range(1, n):
            candidates = score[:, None] + self.transitions  # [from, to]
            back[i] = candidates.argmax(0)
            score = candidates.max(0) + log_probs[i]
        path = [int(score.argmax())]
        for i in range(n - 1, 0, -1):
            path.append(int(back[i, path[-1]]))
        return path[::-1]
