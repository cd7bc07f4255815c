"""Which ReLU to split (scores of the optimised bound, the triangle intercept where they say nothing) and the
stack of split domains (newest first, each with its parent's bounds and slopes)."""
from __future__ import annotations

import pytest
import torch

from certprune.bab.branching import candidate_relus, choose_relus, flat_to_layer
from certprune.bab.domains import DomainStack, ReluDomains
from certprune.bounds import Bounds
from certprune.bounds.alpha import Slopes


def _bounds(lowers, uppers) -> Bounds:
    lowers = tuple(torch.tensor(l, dtype=torch.float32) for l in lowers)
    uppers = tuple(torch.tensor(u, dtype=torch.float32) for u in uppers)
    batch = len(lowers[0])
    return Bounds(torch.zeros(batch, 1), torch.ones(batch, 1), lowers, uppers, torch.zeros(batch, dtype=torch.bool))


def test_the_best_score_among_unsplit_unstable_neurons_across_layers():
    bounds = _bounds([[[-1.0, -1.0], [-1.0, -1.0]], [[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]]],
                     [[[1.0, 1.0], [1.0, 1.0]], [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]])
    scores = (torch.tensor([[0.5, 9.0], [0.5, 0.1]]), torch.tensor([[0.7, 0.2, 0.0], [0.3, 0.0, 2.0]]))
    # box 0 may not split neuron (0, 1) any more; box 1 may split all
    unstable = [torch.tensor([[True, False], [True, True]]), torch.ones(2, 3, dtype=torch.bool)]
    layer, neuron = choose_relus(scores, bounds, unstable)
    assert layer.tolist() == [1, 1] and neuron.tolist() == [0, 2]


def test_zero_scores_fall_back_to_the_loosest_triangle():
    # u * (-l) / (u - l): 0.5 for [-1, 1], 0.75 for [-1, 3], 0.44 for [-4, 0.5]
    bounds = _bounds([[[-1.0, -1.0, -4.0]]], [[[1.0, 3.0, 0.5]]])
    layer, neuron = choose_relus((torch.zeros(1, 3),), bounds, [torch.ones(1, 3, dtype=torch.bool)])
    assert (int(layer), int(neuron)) == (0, 1)


def test_candidates_in_choose_relus_order_then_the_loosest_triangles():
    # scores 0.5 (flat 0) and 2.0 (flat 4); zero scores ranked by the intercept: flat 3 (0.75) before flat 1 (0.5)
    bounds = _bounds([[[-1.0, -1.0]], [[-1.0, -1.0, -1.0]]], [[[1.0, 1.0]], [[3.0, 1.0, 1.0]]])
    scores = (torch.tensor([[0.5, 0.0]]), torch.tensor([[0.0, 2.0, 0.0]]))
    unstable = [torch.ones(1, 2, dtype=torch.bool), torch.tensor([[True, True, False]])]
    flat = candidate_relus(scores, bounds, unstable, 4)
    assert flat.tolist() == [[3, 0, 2, 1]]
    layer, neuron = flat_to_layer(flat[0], [2, 3])
    assert layer.tolist() == [1, 0, 1, 0] and neuron.tolist() == [1, 0, 0, 1]
    assert tuple(map(int, choose_relus(scores, bounds, unstable))) == (1, 1)  # the first candidate
    # fewer unstable neurons than candidates: the best one repeats
    assert candidate_relus(scores, bounds, unstable, 5).tolist() == [[3, 0, 2, 1, 3]]


def test_no_unstable_neuron_is_an_error():
    bounds = _bounds([[[-1.0]]], [[[1.0]]])
    with pytest.raises(ValueError, match="no unstable neuron"):
        choose_relus((torch.ones(1, 1),), bounds, [torch.zeros(1, 1, dtype=torch.bool)])


def _domains(first: int, count: int) -> ReluDomains:
    ids = torch.arange(first, first + count, dtype=torch.float32)
    splits = (ids.to(torch.int8).unsqueeze(1).repeat(1, 2),)
    prior = Bounds(ids.unsqueeze(1), ids.unsqueeze(1), (ids.unsqueeze(1),), (ids.unsqueeze(1),),
                   torch.zeros(count, dtype=torch.bool))
    slopes = Slopes((ids.reshape(-1, 1, 1).repeat(1, 1, 2),), (torch.zeros(count, 1, 2),))
    return ReluDomains(splits, prior, slopes)


def test_stack_takes_the_newest_domains_and_keeps_them_together():
    stack = DomainStack()
    stack.push(_domains(0, 3))
    stack.push(_domains(10, 2))
    batch = stack.take(4)
    assert len(batch) == 4 and len(stack) == 1
    ids = batch.prior.output_lower.flatten().tolist()
    assert ids == [10, 11, 0, 1]
    # splits, bounds and slopes of one domain stay together through select and cat
    assert batch.splits[0][:, 0].tolist() == ids and batch.slopes.alpha[0][:, 0, 0].tolist() == ids
    rest = stack.take(10)
    assert rest.prior.output_lower.flatten().tolist() == [2] and len(stack) == 0


def test_children_split_one_neuron_each_way_and_inherit_everything_else():
    parents = _domains(0, 2)
    children = parents.children(torch.tensor([0, 0]), torch.tensor([1, 0]))
    assert children.splits[0].tolist() == [[0, 1], [1, 1], [0, -1], [-1, 1]]
    assert children.prior.output_lower.flatten().tolist() == [0, 1, 0, 1]
    assert children.slopes.alpha[0].dtype == torch.bfloat16
    assert children.slopes.alpha[0][:, 0, 0].tolist() == [0, 1, 0, 1]


# ---- input splitting ----------------------------------------------------------------------------

def test_input_score_is_coefficient_times_width_over_open_rows():
    from certprune.bab.branching import choose_input_dims_sb

    lower, upper = torch.zeros(2, 3), torch.tensor([[1.0, 1.0, 4.0], [1.0, 0.0, 1.0]])
    # row 0: |a| = (3, 1, 0.5); row 1: (0, 0, 10), closed: it must not count
    coefficients = torch.tensor([[[3.0, -1.0, 0.5], [0.0, 0.0, 10.0]]]).repeat(2, 1, 1)
    rows = torch.tensor([True, False])
    dims = choose_input_dims_sb(lower, upper, coefficients, rows)
    # box 0: 3*1, 1*1, 0.5*4 -> dim 0; box 1: dim 1 has no width, so dims 0 (3) or 2 (0.5) -> 0
    assert dims.tolist() == [0, 0]
    coefficients[1, 0] = torch.tensor([0.0, 5.0, 0.5])  # dim 1 fixed: never chosen, however large its coefficient
    assert choose_input_dims_sb(lower, upper, coefficients, rows).tolist() == [0, 2]


def test_lookahead_takes_the_dimension_whose_halves_come_closest_to_a_proof():
    from certprune.bab.branching import choose_input_dims_sb
    from certprune.bab.domains import bisect

    lower, upper = torch.zeros(1, 3), torch.ones(1, 3)
    coefficients = torch.tensor([[[3.0, 2.0, 1.0]]])
    rows = torch.tensor([True])
    tried = []

    def shortfall(lo, hi):  # halving dim 2 proves one half, the others leave both short
        dim = int(torch.nonzero((hi - lo)[0] < 1)[0])
        tried.append(dim)
        return torch.tensor([0.0, -1.0]) if dim == 2 else torch.tensor([-0.8, -0.8])

    assert choose_input_dims_sb(lower, upper, coefficients, rows, shortfall=shortfall).tolist() == [2]
    assert sorted(tried) == [0, 1, 2]
    # equal shortfalls: the better score wins
    same = choose_input_dims_sb(lower, upper, coefficients, rows, shortfall=lambda lo, hi: torch.full((2,), -1.0))
    assert same.tolist() == [0]
    lo2, hi2 = bisect(lower, upper, same)
    assert hi2[0, 0] == 0.5 and lo2[1, 0] == 0.5


def test_shortfall_sums_the_negative_gaps_and_is_zero_where_refuted():
    from certprune.bab.branching import shortfall_of

    lower = torch.tensor([[-1.0, 2.0, -3.0], [-1.0, -2.0, 0.0]])
    rhs = torch.tensor([0.0, 1.0, torch.inf])  # the last row never proves: left out
    refuted = torch.tensor([False, True])
    assert shortfall_of(lower, rhs, refuted).tolist() == [-1.0, 0.0]


def test_fast_path_splits_as_the_engine_chooses():
    """fastpath._split mirrors choose_input_dims_sb (numpy against torch) on random boxes and shortfalls."""
    import numpy as np

    from certprune import fastpath
    from certprune.bab.branching import choose_input_dims_sb

    rng = np.random.default_rng(0)
    lo = rng.uniform(-1, 0, (20, 5))
    hi = lo + rng.uniform(0, 1, (20, 5)) * (rng.uniform(size=(20, 5)) > 0.2)
    coefficients = rng.normal(size=(20, 3, 5))
    rows = np.array([True, False, True])
    table = rng.uniform(-1, 0, (5, 40))

    def shortfall(a, b):  # a function of the halved dimension and the box, the same in both
        dim = np.argmax(np.abs((b - a)[:20] - (hi - lo)), axis=1)
        return np.concatenate([table[dim, np.arange(20)], table[dim, 20 + np.arange(20)]])

    ours = choose_input_dims_sb(torch.from_numpy(lo), torch.from_numpy(hi), torch.from_numpy(coefficients),
                                torch.from_numpy(rows), shortfall=lambda a, b: torch.from_numpy(shortfall(a.numpy(),
                                                                                                           b.numpy())))
    def bound(a, b):  # the shortfall as the "bound", so that the numpy side sees the same numbers
        nothing = np.zeros((len(a), 1))
        return shortfall(a, b)[:, None], np.zeros((len(a), 1, 5)), fastpath.Layers((a, b), [], nothing, nothing, [])

    left, right, lower, _, layers = fastpath._split(lo, hi, coefficients, rows, bound, lambda lower: lower[:, 0])
    assert np.array_equal(layers.box[0], left) and np.array_equal(layers.box[1], right)
    halved = np.argmax(np.abs((right - left)[:20] - (hi - lo)), axis=1)
    assert halved.tolist() == ours.tolist()
    assert np.array_equal(lower[:, 0], shortfall(left, right))  # each half keeps the bounds it was tried with


def test_queued_boxes_keep_their_bounds_and_are_taken_apart_from_others():
    """Boxes queued with the look-ahead's bounds come back with them; a batch never mixes them with boxes
    that still need bounding (whose bounds the engine computes), and a batch cut in two keeps each part's."""
    from certprune.bab.domains import BoxQueue, Known

    queue = BoxQueue([3])
    queue.push(torch.zeros(2, 4), torch.ones(2, 4))  # to be bounded
    known = Known(torch.tensor([[1.0], [2.0], [3.0]]), torch.arange(12.0).reshape(3, 1, 4))
    queue.push(torch.zeros(3, 4), torch.ones(3, 4), None, known)
    lower, upper, patterns, got = queue.take(2)
    assert len(lower) == 2 and patterns is None and got.output_lower.flatten().tolist() == [1.0, 2.0]
    assert got.input_coefficients.shape == (2, 1, 4)
    lower, _, _, got = queue.take(10)  # the one known box left, not the unknown batch behind it
    assert len(lower) == 1 and got.output_lower.flatten().tolist() == [3.0]
    lower, _, _, got = queue.take(10)
    assert len(lower) == 2 and got is None and len(queue) == 0
