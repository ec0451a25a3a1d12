"""Next-token choice for a batch of rows, each with its own temperature and top-p.

Temperature 0 means argmax. Otherwise softmax(logits / T) restricted to the smallest set of
tokens whose probability mass reaches top_p (the token that crosses the threshold is kept),
then one multinomial draw.
"""

from __future__ import annotations

import torch


def sample_tokens(
    logits_bv: torch.Tensor,
    temperature_b: torch.Tensor,
    top_p_b: torch.Tensor,
    generator: torch.Generator | None = None,
    all_greedy: bool = False,
) -> torch.Tensor:
    """logits (B, V), temperature (B,), top_p (B,) -> token ids (B,) int64.

    ``all_greedy`` lets the caller skip the sampling work when every row has temperature 0.
    """
    greedy_b = logits_bv.argmax(dim=-1)
    if all_greedy:
        return greedy_b
    safe_t = torch.where(temperature_b > 0, temperature_b, torch.ones_like(temperature_b))
    probs_bv = torch.softmax(logits_bv.float() / safe_t[:, None].float(), dim=-1)
    sorted_p, sorted_idx = torch.sort(probs_bv, dim=-1, descending=True)
    mass_before = torch.cumsum(sorted_p, dim=-1) - sorted_p
    sorted_p = sorted_p.masked_fill(mass_before > top_p_b[:, None].float(), 0.0)
    choice = torch.multinomial(sorted_p, num_samples=1, generator=generator)  # renormalises itself
    sampled_b = sorted_idx.gather(-1, choice).squeeze(-1)
    return torch.where(temperature_b > 0, sampled_b, greedy_b)


def sample_with_noise(
    logits_bv: torch.Tensor, temperature_b: torch.Tensor, top_p_b: torch.Tensor, noise_bv: torch.Tensor
) -> torch.Tensor:
    """Like :func:`sample_tokens` with the randomness passed in: ``noise_bv`` ~ Exponential(1), iid.

    ``argmax(p / e)`` over exponential noise ``e`` draws index ``i`` with probability ``p_i / sum(p)``
    (the exponential race), so this is one multinomial draw from the top-p-cut distribution with
    no generator argument and no host synchronisation: a static graph for ``torch.compile`` and
    CUDA-graph capture (the noise is drawn outside, into a fixed buffer).
    """
    greedy_b = logits_bv.argmax(dim=-1)
    safe_t = torch.where(temperature_b > 0, temperature_b, torch.ones_like(temperature_b))
    probs_bv = torch.softmax(logits_bv.float() / safe_t[:, None].float(), dim=-1)
    sorted_p, sorted_idx = torch.sort(probs_bv, dim=-1, descending=True)
    mass_before = torch.cumsum(sorted_p, dim=-1) - sorted_p
    sorted_p = sorted_p.masked_fill(mass_before > top_p_b[:, None].float(), 0.0)
    choice = (sorted_p / noise_bv).argmax(dim=-1, keepdim=True)
    sampled_b = sorted_idx.gather(-1, choice).squeeze(-1)
    return torch.where(temperature_b > 0, sampled_b, greedy_b)
