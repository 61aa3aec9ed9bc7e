"""Which layers train: ``head``, ``last-block``, ``last:N`` (the last N parameterised layers)
or ``all``. Frozen BatchNorm layers are kept in inference mode while training, as Keras does
for layers with ``trainable = False``.

The study unfroze "the last 50 Keras layers"; Keras counts activations, concatenations and
pooling as layers too, so ``last:N`` here counts only layers that hold parameters
(convolutions, batch norms, linear layers) and is not numerically the same N.
"""

from __future__ import annotations

import torch.nn as nn


def _parameterised_layers(network: nn.Module) -> list[nn.Module]:
    return [m for m in network.modules() if any(True for _ in m.parameters(recurse=False))]


def trainable_modules(network: nn.Module, policy: str) -> list[nn.Module]:
    """The modules ``policy`` makes trainable."""
    policy = policy.strip().lower()
    if policy == "all":
        return [network]
    if policy == "head":
        return [network.head]
    if policy == "last-block":
        if not hasattr(network, "last_block"):
            raise ValueError(f"{type(network).__name__} does not define its last block; use head, last:N or all")
        return list(network.last_block())
    if policy.startswith("last:"):
        try:
            n = int(policy.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"trainable policy {policy!r}: N must be a positive integer, e.g. last:50")
        layers = _parameterised_layers(network)
        return layers[-n:] + [network.head]
    raise ValueError(f"unknown trainable policy {policy!r}; use head, last-block, last:N or all")


def apply_trainable(network: nn.Module, policy: str) -> tuple[int, int]:
    """Set ``requires_grad`` by ``policy``; returns (trainable, total) parameter counts."""
    for p in network.parameters():
        p.requires_grad_(False)
    for module in trainable_modules(network, policy):
        for p in module.parameters():
            p.requires_grad_(True)
    total = sum(p.numel() for p in network.parameters())
    trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
    return trainable, total


def freeze_frozen_batchnorm(network: nn.Module) -> None:
    """Put BatchNorm layers whose parameters are frozen into eval mode (running statistics fixed)."""
    for m in network.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()
