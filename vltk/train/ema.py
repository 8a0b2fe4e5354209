"""An exponential moving average of a model's weights, for the weights a run publishes.

    ema = EMA(model)
    ema.update(model, decay=ema_decay_at(step, 0.999))    # after each optimiser step
    ema.copy_to(eval_model)                                # evaluate / publish the averaged weights

Every floating-point entry of the state dict (parameters and float buffers such as an EMA codebook or BatchNorm
statistics) is averaged; integer and bool buffers (counters, "initialised" flags) are copied as they are.
"""

from __future__ import annotations

import torch
from torch import nn


def ema_decay_at(step: int, decay: float) -> float:
    """The decay used after optimiser step `step` (0-based): min(decay, (1 + step) / (10 + step)).

    The warm-up keeps the random initial weights from dominating short runs: with a fixed 0.999 they would still
    weigh 0.999**1000 = 37% after 1,000 steps.
    """
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def ema_update_(average: list[torch.Tensor], current: list[torch.Tensor], decay: float) -> None:
    """average <- decay * average + (1 - decay) * current, in place, for each pair of float tensors."""
    torch._foreach_lerp_(average, current, 1.0 - decay)


class EMA:
    """The averaged copy of a module's state dict, keyed by its state-dict names."""

    def __init__(self, module: nn.Module):
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: nn.Module, decay: float) -> None:
        state = module.state_dict()
        floats = [k for k, v in self.shadow.items() if v.is_floating_point()]
        ema_update_([self.shadow[k] for k in floats], [state[k].detach() for k in floats], decay)
        for key, value in self.shadow.items():
            if not value.is_floating_point():
                value.copy_(state[key])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) ^ set(state)
        if missing:
            raise KeyError(f"EMA state does not match the model: {sorted(missing)[:5]}")
        for key, value in state.items():
            self.shadow[key].copy_(value)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        module.load_state_dict(self.shadow)
