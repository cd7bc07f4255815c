"""The twin network: two copies of a classifier sharing their non-protected inputs, as one ordinary Network.

Input ``z = [s, p, p', delta]``: ``s`` the non-protected attributes in input order (relaxed ones included,
as copy 1 sees them), ``p``/``p'`` the protected attributes of copy 1 and copy 2, ``delta`` one offset per
relaxed attribute. Copy 1 reads ``x = (s, p)``, copy 2 reads ``x' = (s + delta on relaxed, p')``. The first
layer maps ``z`` to both copies' first layers (the selection is folded into the first Dense exactly: each
column of the product is one column of W), later layers are block-diagonal, and the output is
``Y = [y, y']``, the logits the decision reads. Every bound method, the MILP and the Z3 encoder take it
as it is: bounds on ``z`` boxes are bounds over each copy's own box, and the shared ``s`` cancels in
CROWN's bounds of ``y - y'``.

``prune`` removes the neurons stably inactive over given boxes and marks the stably active ones as linear,
from bounds over the boxes of EACH copy (the twin's neurons are per copy), recording which method decided.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from certprune.errors import UnsupportedLayerError
from certprune.network import Affine, Dense, Flatten, Network, ReLU
from certprune.spec.fairness import FairnessProperty


@dataclass(frozen=True)
class TwinLayout:
    """Where each model input comes from in ``z``; ``tolerance`` per relaxed attribute (input order)."""

    n_inputs: int
    shared: tuple[int, ...]
    protected: tuple[int, ...]
    relaxed: tuple[int, ...]
    tolerance: tuple[float, ...]

    @classmethod
    def of(cls, prop: FairnessProperty) -> "TwinLayout":
        names = prop.names
        protected = tuple(names.index(n) for n in prop.protected)
        relaxed = tuple(names.index(n) for n in prop.relaxed)
        shared = tuple(i for i in range(len(names)) if i not in protected)
        return cls(len(names), shared, protected, relaxed, tuple(prop.relaxed.values()))

    @property
    def size(self) -> int:
        return len(self.shared) + 2 * len(self.protected) + len(self.relaxed)

    def p_slot(self, copy: int) -> int:
        """Index in ``z`` of the first protected attribute of ``copy`` (0 or 1)."""
        return len(self.shared) + copy * len(self.protected)

    @property
    def delta_slot(self) -> int:
        return len(self.shared) + 2 * len(self.protected)

    def shared_slot(self, attribute: int) -> int:
        return self.shared.index(attribute)

    def selection(self) -> tuple[np.ndarray, np.ndarray]:
        """0/1 matrices ``E1``, ``E2`` (n_inputs, size) with ``x = E1 @ z``, ``x' = E2 @ z``."""
        E1 = np.zeros((self.n_inputs, self.size))
        E2 = np.zeros((self.n_inputs, self.size))
        for slot, i in enumerate(self.shared):
            E1[i, slot] = E2[i, slot] = 1.0
        for k, i in enumerate(self.protected):
            E1[i, self.p_slot(0) + k] = 1.0
            E2[i, self.p_slot(1) + k] = 1.0
        for k, i in enumerate(self.relaxed):
            E2[i, self.delta_slot + k] = 1.0
        return E1, E2

    def pair(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The two model inputs (B, n_inputs) of a batch of twin inputs (B, size)."""
        E1, E2 = self.selection()
        z = np.asarray(z, dtype=np.float64)
        return z @ E1.T, z @ E2.T


def build_twin(network: Network, layout: TwinLayout, outputs: Sequence[int] | None = None) -> Network:
    """The twin of a dense ReLU network; ``outputs`` picks the logits each copy reports (default all)."""
    layers = _dense_chain(network, layout.n_inputs)
    E1, E2 = layout.selection()
    dtype = network.dtype
    E = torch.tensor(np.concatenate([E1, E2]), dtype=dtype)
    twin: list = []
    slice_last = outputs is not None and bool(layers) and isinstance(layers[-1], Dense)
    for position, layer in enumerate(layers):
        if isinstance(layer, Dense):
            W, b = layer.weight, layer.bias
            if slice_last and position == len(layers) - 1:
                W, b = W[list(outputs)], b[list(outputs)]
            W2, b2 = torch.block_diag(W, W), torch.cat([b, b])
            if not twin:  # fold the selection in: each column of W2 @ E is one column of W (exact)
                W2 = W2 @ E
            twin.append(Dense(W2, b2))
            continue
        if not twin:
            twin.append(Dense(E, torch.zeros(len(E), dtype=dtype)))
        if isinstance(layer, ReLU):
            twin.append(ReLU())
        else:
            scale, shift = layer.scale.reshape(-1), layer.shift.reshape(-1)
            twin.append(Affine(torch.cat([scale, scale]), torch.cat([shift, shift])))
    if not twin:
        twin.append(Dense(E, torch.zeros(len(E), dtype=dtype)))
    if outputs is not None and not slice_last:
        twin.append(_pick(int(np.prod(network.output_shape)), outputs, dtype))
    return Network(tuple(twin), (layout.size,), None, "z", "Y")


def _dense_chain(network: Network, n_inputs: int) -> list:
    """The network's layers with Flatten dropped; only dense chains (Dense/Affine/ReLU) have a twin."""
    size = int(np.prod(network.input_shape))
    if size != n_inputs:
        raise UnsupportedLayerError(f"the model takes {size} inputs, the layout describes {n_inputs}")
    if not network.is_chain:
        raise UnsupportedLayerError("fairness verification supports chains of dense layers; this model's "
                                    "layers branch and join")
    layers = []
    for index, layer in enumerate(network.layers):
        if isinstance(layer, Flatten):
            continue
        if not isinstance(layer, (Dense, Affine, ReLU)):
            raise UnsupportedLayerError(f"fairness verification supports dense networks; layer {index} is "
                                        f"{layer.kind}")
        layers.append(layer)
    return layers


def _pick(n: int, outputs: Sequence[int], dtype) -> Dense:
    """A 0/1 Dense taking ``outputs`` of both copies from ``[y (n), y' (n)]``."""
    k = len(outputs)
    W = torch.zeros(2 * k, 2 * n, dtype=dtype)
    for row, j in enumerate(outputs):
        W[row, j] = W[k + row, n + j] = 1.0
    return Dense(W, torch.zeros(2 * k, dtype=dtype))


# ---------------------------------------------------------------------------------------------------
# Pruning from bounds


@dataclass(frozen=True, eq=False)
class PrunedTwin:
    """A twin without its stably inactive neurons.

    ``states[i]`` per ReLU layer (kept neurons): +1 stably active (linear), -1 inactive (kept only when
    it could not be removed), 0 unstable. ``pre_lower``/``pre_upper`` are the kept neurons' bounds
    (B, N). ``stats`` counts per copy and the method that first proved each neuron stable.
    """

    network: Network
    states: tuple[np.ndarray, ...]
    pre_lower: tuple[torch.Tensor, ...]
    pre_upper: tuple[torch.Tensor, ...]
    stats: dict


def prune(twin: Network, bounds: Sequence[tuple[str, object]]) -> PrunedTwin:
    """Drop neurons stably inactive on every box of the batch; ``bounds`` are (method name, Bounds) from the
    cheapest to the tightest, each sound for the same boxes (the last is used for the kept bounds)."""
    final = bounds[-1][1]
    n_layers = len(final.pre_lower)
    lower = [final.pre_lower[i].flatten(1) for i in range(n_layers)]
    upper = [final.pre_upper[i].flatten(1) for i in range(n_layers)]
    states = [_states(lo, hi) for lo, hi in zip(lower, upper)]
    stats = _stats(states, bounds)
    layers = list(twin.layers)
    relu_positions = [i for i, layer in enumerate(layers) if isinstance(layer, ReLU)]
    keep_all = []
    for r, position in enumerate(relu_positions):
        keep = states[r] != -1
        if not keep.any():
            keep[0] = True  # a layer keeps one neuron: zero-width layers confuse nobody but are pointless
        if not _removable(layers, position):
            keep[:] = True
        _slice(layers, position, torch.from_numpy(keep))
        keep_all.append(keep)
    network = twin.with_layers(layers)
    return PrunedTwin(network, tuple(s[k] for s, k in zip(states, keep_all)),
                      tuple(lo[:, torch.from_numpy(k)] for lo, k in zip(lower, keep_all)),
                      tuple(hi[:, torch.from_numpy(k)] for hi, k in zip(upper, keep_all)), stats)


def _states(lower: torch.Tensor, upper: torch.Tensor) -> np.ndarray:
    active = (lower >= 0).all(dim=0)
    inactive = (upper <= 0).all(dim=0) & ~active
    return (active.to(torch.int8) - inactive.to(torch.int8)).numpy()


def _stats(states: list[np.ndarray], bounds) -> dict:
    """Per copy: inactive, active, unstable; per method: neurons it was the first to prove stable."""
    copies = {}
    for copy in (0, 1):
        counts = {"inactive": 0, "active": 0, "unstable": 0}
        for s in states:
            half = s[copy * (len(s) // 2):(copy + 1) * (len(s) // 2)]
            counts["inactive"] += int((half == -1).sum())
            counts["active"] += int((half == 1).sum())
            counts["unstable"] += int((half == 0).sum())
        copies[f"copy{copy + 1}"] = counts
    by_method: dict[str, int] = {}
    decided = [np.zeros(len(s), dtype=bool) for s in states]
    for name, b in bounds:
        count = 0
        for i, s in enumerate(states):
            now = _states(b.pre_lower[i].flatten(1), b.pre_upper[i].flatten(1)) != 0
            count += int((now & ~decided[i]).sum())
            decided[i] |= now
        by_method[name] = by_method.get(name, 0) + count
    return {"neurons": int(sum(len(s) for s in states)), **copies, "stable_by": by_method}


def _removable(layers: list, position: int) -> bool:
    """A ReLU's neurons can be cut when a Dense feeds it (Affines between) and a Dense reads it directly."""
    after = layers[position + 1] if position + 1 < len(layers) else None
    before = position - 1
    while before >= 0 and isinstance(layers[before], Affine):
        before -= 1
    return isinstance(after, Dense) and before >= 0 and isinstance(layers[before], Dense)


def _slice(layers: list, position: int, keep: torch.Tensor) -> None:
    if bool(keep.all()):
        return
    after = layers[position + 1]
    layers[position + 1] = Dense(after.weight[:, keep], after.bias)
    i = position - 1
    while isinstance(layers[i], Affine):
        layers[i] = Affine(layers[i].scale[keep], layers[i].shift[keep])
        i -= 1
    layers[i] = Dense(layers[i].weight[keep], layers[i].bias[keep])
