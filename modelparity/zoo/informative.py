"""Make a randomly initialised network's outputs informative, so parity checks against it mean something.

A torchvision model with weights=None gives outputs that barely depend on the input (measured:
mobilenet_v3_small |y| <= 2e-9; resnet18 the same top-1 for every input). Comparing such outputs
passes whatever the export did. Two steps fix that without downloading weights:
BatchNorm statistics recomputed on the inputs the model will see, and a final linear layer rescaled
and centred so logits have unit-order spread across inputs and different inputs win different classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


@torch.no_grad()
def recalibrate_batchnorm(module: nn.Module, batches: Sequence[torch.Tensor]) -> None:
    """Replace running BatchNorm statistics by their cumulative average over `batches`."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    module.train()
    for batch in batches:
        module(batch)
    module.eval()


@torch.no_grad()
def rescale_head(module: nn.Module, head: nn.Linear, batches: Sequence[torch.Tensor],
                 target_std: float = 2.0) -> None:
    """Scale `head` so its outputs have `target_std` spread over `batches`, centred per class.

    Centring (bias = -W @ mean feature) removes the input-independent part of the logits, which is
    what made every input pick the same class.
    """
    features: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _m, args, _out: features.append(args[0].flatten(0, -2)))
    module.eval()
    for batch in batches:
        module(batch)
    hook.remove()
    feats = torch.cat(features)
    centred = (feats - feats.mean(0)) @ head.weight.T
    head.weight.mul_(target_std / centred.std().clamp_min(1e-12))
    if head.bias is None:
        head.bias = nn.Parameter(torch.zeros(head.out_features))
    head.bias.copy_(-(head.weight @ feats.mean(0)))
