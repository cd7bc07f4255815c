"""Sampled inputs of boxes (corners included) and the network values the bounds must contain."""
from __future__ import annotations

import torch

from certprune.network import Network


def sample_box(lower: torch.Tensor, upper: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, *shape) points of the box [lower, upper]: a fifth are vertices (all if few), the rest uniform."""
    shape, dims = lower.shape, lower.numel()
    n_corners = min(2**dims, n // 5) if dims < 30 else n // 5
    if 2**dims <= n_corners:
        bits = (torch.arange(2**dims).unsqueeze(1) >> torch.arange(dims)) & 1
    else:
        bits = torch.randint(0, 2, (n_corners, dims), generator=gen)
    corners = torch.where(bits.bool(), upper.flatten(), lower.flatten())
    u = torch.rand(n - corners.shape[0], dims, generator=gen, dtype=lower.dtype)
    inside = lower.flatten() + u * (upper - lower).flatten()
    return torch.cat([corners, inside]).reshape(n, *shape)


def activations(network: Network, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The input of every ReLU layer and the flat logits for a batch x."""
    outputs = network.trace(x)
    pre = [([x] + outputs)[network.inputs[i][0] + 1] for i in network.relu_positions()]
    return pre, outputs[-1].flatten(start_dim=1)


def satisfies(pre: list[torch.Tensor], splits) -> torch.Tensor:
    """Which samples (pre-activations of one box) satisfy the splits of that box (list of (*shape) or None)."""
    ok = torch.ones(pre[0].shape[0] if pre else 0, dtype=torch.bool) if pre else None
    if splits is None:
        return ok
    for z, s in zip(pre, splits):
        if s is None:
            continue
        bad = ((s > 0) & (z < 0)) | ((s < 0) & (z > 0))
        ok &= ~bad.flatten(start_dim=1).any(dim=1)
    return ok
