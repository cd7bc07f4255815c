"""Sound bound propagation for ReLU networks: IBP, CROWN, alpha/beta-CROWN, and a cascade of them.

Usage::

    from certprune.bounds import IBP, CROWN, AlphaCROWN, Cascade, Bounds, Splits

    method = CROWN()                 # settings are frozen keyword-only dataclasses,
                                     # e.g. AlphaCROWN(iterations=20, lr=0.1)
    b: Bounds = method.compute(network, lower, upper, C=None, splits=None)

``lower``/``upper`` are (B, *network.input_shape): a batch of input boxes. Computation is in float64 when they
are float64 (the network is converted), else float32.

``C`` is an optional (K, n_out) or (B, K, n_out) specification matrix: the bounds are of C @ logits (so margins
y_true - y_j come out directly); None means the identity (K = n_out, logits flattened).

``splits`` (type ``Splits``) is optional: per ReLU layer (in network order) an int8 tensor
(B, *pre_activation_shape) or None, with +1 (neuron forced active: pre >= 0), -1 (forced inactive: pre <= 0),
0 free. The clamp is applied as soon as that layer's bounds are known, so later layers benefit; AlphaCROWN also
optimises beta-CROWN multipliers of the split constraints (``beta=True``).

``prior`` (keyword-only, optional) is a Bounds already known to hold for these boxes, C and splits (a cheaper
method's, or a parent subdomain's in branch and bound); the result is never looser than it.

The result ``b``:

- ``b.output_lower``, ``b.output_upper``: (B, K).
- ``b.pre_lower[i]``, ``b.pre_upper[i]``: (B, *shape) bounds of the input of ReLU layer i (after the splits).
- ``b.stable_active(i)`` (lower >= 0), ``b.stable_inactive(i)`` (upper <= 0), ``b.unstable(i)``
  (lower < 0 < upper): boolean masks (B, *shape).
- ``b.unstable_counts()``: per-layer ints summed over the batch; ``b.unstable_counts(per_box=True)``: per-layer
  (B,) tensors.
- ``b.infeasible``: (B,) True where the splits contradict the bounds (empty subdomain; outputs +inf/-inf).
- ``b.intersect(other)``: elementwise best of two Bounds of the same boxes.

Methods: ``IBP()``; ``CROWN(chunk_elements=...)``; ``AlphaCROWN(iterations, lr, lr_beta, lr_decay, beta,
optimize_upper, chunk_elements)``; ``Cascade(methods=(IBP(), CROWN(), AlphaCROWN()), until=None)`` which keeps
the best bounds so far and stops when ``until(bounds)`` is true. A new method subclasses ``BoundMethod`` and
implements ``run(problem, prior)``. A layer kind without a rule raises certprune.errors.UnsupportedLayerError.

Soundness in floating point: every bound is widened by 2^-15 (float32) or 2^-44 (float64) times the sum of
|terms| that produced it and the forward pass (see ``base.REL``), so sampled outputs never escape by rounding.
"""
from certprune.bounds.alpha import AlphaCROWN
from certprune.bounds.base import BoundMethod, Bounds, Splits
from certprune.bounds.cascade import Cascade
from certprune.bounds.crown import CROWN
from certprune.bounds.ibp import IBP

__all__ = ["IBP", "CROWN", "AlphaCROWN", "Cascade", "Bounds", "Splits", "BoundMethod"]
