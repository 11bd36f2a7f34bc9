"""The preference losses, on the log-probabilities of each pair's answers (torch only, no model).

Inputs per pair: the summed log-probabilities of the chosen and rejected answers' tokens under the
policy (``chosen``, ``rejected``), their token counts, and, for the losses with a reference model,
the reference's sums (``ref_chosen``, ``ref_rejected``). With ``beta`` = β and label smoothing ε:

- ``dpo``: z = (chosen - ref_chosen) - (rejected - ref_rejected);
  loss = -(1-ε) log σ(βz) - ε log σ(-βz)
- ``ipo``: z as for dpo on log-probabilities averaged over each answer's tokens; loss = (z - 1/(2β))²
- ``hinge``: loss = max(0, 1 - βz)
- ``simpo`` (no reference): z = mean(chosen) - mean(rejected) - γ/β; loss as dpo's
- ``orpo`` (no reference): with p̄ the answers' mean token log-probabilities,
  log-odds = (p̄c - p̄r) - (log(1 - e^p̄c) - log(1 - e^p̄r)); loss = -β log σ(log-odds), to which the
  task adds the chosen answers' negative log-likelihood (a mean over their tokens)

The implicit rewards are β(policy - reference) for the losses with a reference (on the averaged
values for ipo), β times the mean token log-probability for simpo and orpo.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .options import REFERENCE_FREE


@dataclass
class PairLosses:
    losses: torch.Tensor | None  # per pair; None: a loss that needs a reference, and none was given
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def _log_one_minus_exp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - e^x) for x < 0, accurately near 0."""
    return torch.log(-torch.expm1(x.clamp(max=-1e-12)))


def pair_losses(loss: str, beta: float, chosen, rejected, chosen_tokens, rejected_tokens, ref_chosen=None,
                ref_rejected=None, label_smoothing: float = 0.0, simpo_gamma: float = 0.5) -> PairLosses:
    """Per-pair losses and implicit rewards (see the module)."""
    chosen_tokens = chosen_tokens.clamp(min=1).to(chosen.dtype)
    rejected_tokens = rejected_tokens.clamp(min=1).to(rejected.dtype)
    if loss in REFERENCE_FREE:
        c, r = chosen / chosen_tokens, rejected / rejected_tokens
        if loss == "simpo":
            z = c - r - simpo_gamma / beta
            out = -F.logsigmoid(beta * z) * (1 - label_smoothing) - F.logsigmoid(-beta * z) * label_smoothing
        else:
            log_odds = (c - r) - (_log_one_minus_exp(c) - _log_one_minus_exp(r))
            out = -beta * F.logsigmoid(log_odds)
        return PairLosses(out, (beta * c).detach(), (beta * r).detach())
    if ref_chosen is None:  # no reference: the rewards of a model compared with nothing
        return PairLosses(None, (beta * chosen).detach(), (beta * rejected).detach())
    if loss == "ipo":
        chosen, rejected = chosen / chosen_tokens, rejected / rejected_tokens
        ref_chosen, ref_rejected = ref_chosen / chosen_tokens, ref_rejected / rejected_tokens
    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
    z = chosen_ratio - rejected_ratio
    if loss == "dpo":
        out = -F.logsigmoid(beta * z) * (1 - label_smoothing) - F.logsigmoid(-beta * z) * label_smoothing
    elif loss == "ipo":
        out = (z - 1 / (2 * beta)) ** 2
    elif loss == "hinge":
        out = torch.relu(1 - beta * z)
    else:
        raise ValueError(f"unknown preference loss {loss!r}")
    return PairLosses(out, (beta * chosen_ratio).detach(), (beta * rejected_ratio).detach())


def nll(chosen, chosen_tokens) -> torch.Tensor:
    """The chosen answers' negative log-likelihood, a mean over all their tokens (ORPO's SFT term)."""
    return -chosen.sum() / chosen_tokens.sum().clamp(min=1)
