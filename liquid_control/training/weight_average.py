"""An exponential moving average of a policy's weights during training (``training.ema_decay``).

Behaviour cloning's last optimizer steps move the weights along the last batches' gradients, so the policy a round
ends with may be one draw around where training has settled; the average of the weights over the last few hundred
steps (Polyak averaging, as in timm's ModelEmaV2 or ``torch.optim.swa_utils``) is closer to that point. On the robust
rover config it drove worse, not better (docs/weight_average/), so it is off by default. The run trains the
weights as before and keeps the average beside them; the average is what it measures and keeps: it drives the
DAgger rounds, it is scored on the selection episodes (a bag run's validation bags) and it is written to policy.pt.
Buffers (the input normalisation, the NCP wiring's masks) are not averaged: they are set, not learnt.
"""

from __future__ import annotations

import contextlib
import math

import torch


class WeightAverage:
    """``average = decay * average + (1 - decay) * weights`` after every optimizer step, per parameter of ``policy``;
    the first step sets it to the weights (so a warm start's weights are where it begins, not a random draw)."""

    def __init__(self, policy: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"training.ema_decay: {decay!r} is not in (0, 1)")
        self.decay = float(decay)
        # the policy's parameter tensors, once: loading weights (a warm start, a resume) copies into them in place
        named = list(policy.named_parameters())
        self.names, self.parameters = [name for name, _ in named], [p for _, p in named]
        self.average: list[torch.Tensor] | None = None  # None: no optimizer step yet
        self.steps = 0

    @torch.no_grad()
    def update(self) -> None:
        """Fold the weights after an optimizer step into the average."""
        params = self.parameters
        if self.average is None:
            self.average = [p.detach().clone() for p in params]
        else:
            for average, p in zip(self.average, params):
                average.lerp_(p, 1.0 - self.decay)
        self.steps += 1

    def note(self, steps: int) -> tuple[str, str | None]:
        """What the run's last line says of an average over ``steps`` optimizer steps, and a warning where the
        first step's weights (where it began: a warm start's, or a random draw's after one step) still weigh over 5%."""
        said = f" (its weights' average over {steps} optimizer step(s), training.ema_decay {self.decay:g})"
        first = self.decay ** max(steps - 1, 0)
        if first <= 0.05:
            return said, None
        half = math.log(0.5) / math.log(self.decay)
        return said, (
            f"warning: the kept average still holds {first:.0%} of the weights after the first optimizer step "
            f"(training.ema_decay {self.decay:g} halves a step's share in {half:.0f} steps; this run took {steps}): "
            "it is close to where training began; lower training.ema_decay or train longer"
        )

    @contextlib.contextmanager
    def swapped_in(self):
        """The average in the policy's parameters for the block, the trained weights back after it (bit for bit,
        also when the block raises); before the first step the policy's own weights (nothing to average yet)."""
        if self.average is None:
            yield
            return
        params = self.parameters
        trained = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, average in zip(params, self.average):
                p.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, weights in zip(params, trained):
                    p.copy_(weights)

    def state_dict(self) -> dict:
        """What checkpoint.pt keeps of it: a resumed run continues the same average."""
        average = None if self.average is None else dict(zip(self.names, (a.clone() for a in self.average)))
        return {"decay": self.decay, "steps": self.steps, "average": average}

    def problem(self, state) -> str | None:
        """Why ``state`` (a checkpoint's) cannot continue this average, or None."""
        if not isinstance(state, dict) or not isinstance(state.get("steps"), int) or state["steps"] < 0:
            return f"its weight average is not one this run wrote: {type(state).__name__}"
        if state.get("decay") != self.decay:
            return f"its weight average's decay {state.get('decay')!r} is not training.ema_decay {self.decay!r}"
        average = state.get("average")
        if average is None:
            return None if state["steps"] == 0 else "its weight average has steps but no weights"
        if not isinstance(average, dict) or list(average) != self.names:
            return "its weight average is not of this policy's parameters"
        for name, p in zip(self.names, self.parameters):
            value = average[name]
            if not isinstance(value, torch.Tensor) or value.shape != p.shape or value.dtype != p.dtype:
                return f"its weight average of {name} is not a tensor of {tuple(p.shape)} {p.dtype}"
            if not torch.isfinite(value).all():
                return f"its weight average of {name} is not finite (NaN or inf)"
        return None

    def load_state_dict(self, state: dict) -> None:
        """Continue the average ``state`` holds (checked with :meth:`problem` first)."""
        problem = self.problem(state)
        if problem:
            raise ValueError(problem)
        self.steps = state["steps"]
        average = state["average"]
        self.average = None if average is None else [average[name].clone() for name in self.names]
