"""Loss-spike detection: a step whose loss is far above its recent running level.

A diverging run does not always end in NaN: the loss can jump a hundredfold, wreck the features and
partly recover, and the exported backbone then looks like any other. The trainer feeds every step's
loss here (when its log flushes, so no extra host sync) and records each spike: a step whose loss
exceeds `factor` times the median of the previous `window` steps, once `min_history` steps are known.
The median is floored at `floor`, so that late-training noise on a loss near 0 (0.02 -> 0.1) is not
called a spike.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LossSpikeDetector:
    factor: float = 3.0
    window: int = 50
    min_history: int = 20
    floor: float = 0.1
    history: deque[float] = field(default_factory=deque)
    spikes: list[dict[str, float]] = field(default_factory=list)
    max_loss: float = float("-inf")
    max_loss_step: int = 0
    max_ratio: float = 0.0  # the largest loss / running level seen: how close a run came to a spike

    def update(self, step: int, loss: float) -> dict[str, float] | None:
        """Record `loss` at `step`; returns the spike record if this step is one."""
        spike = None
        if len(self.history) >= self.min_history and self.factor > 0:
            level = max(statistics.median(self.history), self.floor)
            self.max_ratio = max(self.max_ratio, loss / level)
            if loss > self.factor * level:
                spike = {"step": step, "loss": loss, "running_median": level}
                self.spikes.append(spike)
        if loss > self.max_loss:
            self.max_loss, self.max_loss_step = loss, step
        self.history.append(loss)
        while len(self.history) > self.window:
            self.history.popleft()
        return spike

    def summary(self) -> dict[str, Any]:
        """What the run record and the tables show: the number of spikes, the first few, the largest loss."""
        return {"loss_spikes": len(self.spikes), "spike_steps": [int(s["step"]) for s in self.spikes[:20]],
                "max_loss": self.max_loss if self.spikes or self.history else None,
                "max_loss_step": self.max_loss_step, "max_ratio": self.max_ratio}

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history), "spikes": list(self.spikes), "max_loss": self.max_loss,
                "max_loss_step": self.max_loss_step, "max_ratio": self.max_ratio}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = deque(state["history"])
        self.spikes = list(state["spikes"])
        self.max_loss, self.max_loss_step = state["max_loss"], state["max_loss_step"]
        self.max_ratio = state.get("max_ratio", 0.0)
