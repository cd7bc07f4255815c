"""torch.nn modules -> Network, for notebooks that hold a model in memory rather than an ONNX file."""
from __future__ import annotations

import torch
from torch import nn

from certprune.errors import UnsupportedLayerError
from certprune.fold import fold_affine
from certprune.network import Affine, Conv2d, Dense, Flatten, Layer, Network, ReLU, apply_output_transform


PARITY_TOLERANCE = 1e-5  # largest |difference| relative to the output scale, as for ONNX files


def from_torch(module: nn.Module, input_shape: tuple[int, ...], *, check: bool = True) -> Network:
    """Convert an ``nn.Sequential`` (nested ones allowed) of supported modules, in eval semantics.

    With ``check`` the Network's forward pass is compared with the module's own (eval mode, no grad) on 64
    seeded standard-normal inputs; a difference beyond ``PARITY_TOLERANCE`` of the output scale is an error,
    so a conversion that would verify a different function than the module never goes unnoticed."""
    layers: list[Layer] = []
    transform = None
    shape = tuple(input_shape)
    for name, child in _leaves(module):
        if transform is not None:
            raise UnsupportedLayerError(f"module '{name}' ({type(child).__name__}) after the final {transform}")
        if isinstance(child, (nn.Sigmoid, nn.Softmax)):
            transform = "sigmoid" if isinstance(child, nn.Sigmoid) else "softmax"
            continue
        layer = _convert(name, child, shape)
        if layer is not None:
            shape = layer.output_shape(shape)
            layers.append(layer)
    network = fold_affine(Network(tuple(layers), tuple(input_shape), transform)).to(torch.float32)
    if check:
        _check_parity(module, network)
    return network


def _check_parity(module: nn.Module, network: Network) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((64, *network.input_shape), generator=generator)
    modes = [(m, m.training) for m in module.modules()]  # restored one by one: submodules may differ
    module.eval()
    try:
        with torch.no_grad():
            reference = module(x).double().reshape(64, -1)
            ours = apply_output_transform(network, network(x)).double().reshape(64, -1)
    finally:
        for submodule, training in modes:
            submodule.training = training
    difference = float((ours - reference).abs().max())
    scale = max(float(reference.abs().max()), 1e-12)
    if difference > PARITY_TOLERANCE * scale:
        raise UnsupportedLayerError(f"from_torch: the converted network differs from the module by {difference:.2e} "
                                    f"(output scale {scale:.2e}); a module with custom forward logic cannot be "
                                    "converted layer by layer")


def _leaves(module: nn.Module):
    if not isinstance(module, nn.Sequential):
        raise UnsupportedLayerError(f"from_torch needs an nn.Sequential, got {type(module).__name__}")
    for name, child in module.named_children():
        if isinstance(child, nn.Sequential):
            yield from ((f"{name}.{n}", c) for n, c in _leaves(child))
        else:
            yield name, child


def _convert(name: str, child: nn.Module, shape: tuple[int, ...]) -> Layer | None:
    def t(x):
        return x.detach().to(torch.float64).clone()

    if isinstance(child, nn.Linear):
        bias = t(child.bias) if child.bias is not None else torch.zeros(child.out_features, dtype=torch.float64)
        return Dense(t(child.weight), bias)
    if isinstance(child, nn.Conv2d):
        if child.groups != 1 or isinstance(child.padding, str) or child.padding_mode != "zeros":
            raise UnsupportedLayerError(f"module '{name}': Conv2d with groups/padding mode certprune lacks")
        bias = t(child.bias) if child.bias is not None else torch.zeros(child.out_channels, dtype=torch.float64)
        return Conv2d(t(child.weight), bias, tuple(child.stride), tuple(child.padding), tuple(child.dilation))
    if isinstance(child, nn.ReLU):
        return ReLU()
    if isinstance(child, nn.Flatten):
        return Flatten() if len(shape) > 1 else None
    if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
        factor = t(child.weight) / torch.sqrt(t(child.running_var) + child.eps)
        offset = t(child.bias) - t(child.running_mean) * factor
        view = (-1,) + (1,) * (len(shape) - 1)
        return Affine(factor.view(view).expand(shape).clone(), offset.view(view).expand(shape).clone())
    if isinstance(child, (nn.Identity, nn.Dropout)):
        return None
    raise UnsupportedLayerError(f"module '{name}' of type {type(child).__name__} is not supported")
