"""Executing action chunks: re-plan every k steps, or temporal ensembling (ACT, Zhao et al. 2023).

A policy returns H actions per query. Plain chunking executes the first ``replan_steps`` of them
and then queries again. Temporal ensembling queries every step and executes, for step t, the
weighted mean of every stored chunk's prediction for t, with weights ``exp(-m * i)`` where i = 0
is the oldest prediction (ACT's scheme: older predictions weigh more, which smooths motion).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ChunkSettings:
    replan_steps: int = 0  # 0 -> execute the whole chunk before querying again
    temporal_ensemble: bool = False
    ensemble_decay: float = 0.01  # m in exp(-m * i)

    def __post_init__(self) -> None:
        if self.replan_steps < 0:
            raise ValueError("replan_steps must be >= 0")
        if self.ensemble_decay < 0:
            raise ValueError("ensemble_decay must be >= 0")


class ChunkExecutor:
    """Decides when to query the policy and which action to execute at each control step."""

    def __init__(self, settings: ChunkSettings) -> None:
        self.settings = settings
        self._chunks: deque[tuple[int, np.ndarray]] = deque()  # (first step, (H, D) actions)
        self._last_query_step = -1

    def reset(self) -> None:
        self._chunks.clear()
        self._last_query_step = -1

    def needs_query(self, step: int) -> bool:
        if not self._chunks:
            return True
        if self.settings.temporal_ensemble:
            return step > self._last_query_step
        start, actions = self._chunks[-1]
        horizon = actions.shape[0]
        k = self.settings.replan_steps or horizon
        return step - start >= min(k, horizon)

    def add(self, step: int, actions: np.ndarray) -> None:
        """Store the chunk predicted at ``step``: (H, D) with row 0 meant for ``step``."""
        chunk = np.asarray(actions, dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape[0] < 1:
            raise ValueError(f"action chunk: expected (H, D) with H >= 1, got {chunk.shape}")
        if not self.settings.temporal_ensemble:
            self._chunks.clear()
        self._chunks.append((step, chunk))
        self._last_query_step = step
        # drop chunks that no longer cover any future step
        while self._chunks and self._chunks[0][0] + self._chunks[0][1].shape[0] <= step:
            self._chunks.popleft()

    def action(self, step: int) -> np.ndarray:
        """The action to execute at ``step`` (D,)."""
        covering = [(start, a) for start, a in self._chunks if 0 <= step - start < a.shape[0]]
        if not covering:
            raise RuntimeError(f"no stored chunk covers step {step}; query the policy first")
        if not self.settings.temporal_ensemble:
            start, actions = covering[-1]
            return actions[step - start]
        predictions = np.stack([a[step - start] for start, a in covering])  # oldest first
        weights = np.exp(-self.settings.ensemble_decay * np.arange(len(covering)))
        weights /= weights.sum()
        return np.asarray((weights[:, None] * predictions).sum(axis=0), dtype=np.float32)
