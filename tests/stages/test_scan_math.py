import pytest
import torch

from stvcli.stages.scan import sensitivity_scores, top_locations


def test_l2_sensitivity_is_norm_of_delta():
    zero = torch.zeros(3, 2, 2, 4)
    many = torch.zeros(3, 2, 2, 4)
    many[:, 1, 0] = torch.tensor([3.0, 4.0, 0.0, 0.0])  # norm 5 at (1, 0)
    scores = sensitivity_scores(zero, many).mean(0)
    expected = torch.zeros(2, 2)
    expected[1, 0] = 5.0
    assert torch.allclose(scores, expected)


def test_relative_sensitivity_divides_by_own_norm():
    zero = torch.zeros(1, 1, 2, 2)
    zero[0, 0, 0] = torch.tensor([10.0, 0.0])  # big-norm head
    zero[0, 0, 1] = torch.tensor([1.0, 0.0])
    many = zero + torch.tensor([0.0, 2.0])  # same delta of norm 2 everywhere
    raw = sensitivity_scores(zero, many, "l2")[0, 0]
    relative = sensitivity_scores(zero, many, "relative")[0, 0]
    assert torch.allclose(raw, torch.tensor([2.0, 2.0]))
    assert torch.allclose(relative, torch.tensor([0.2, 2.0]))


def test_top_locations_best_first_with_stable_ties():
    scores = torch.tensor([[0.1, 0.9, 0.5], [0.9, 0.2, 0.7]])
    locations = top_locations(scores, 4)
    assert locations.tolist() == [[0, 1], [1, 0], [1, 2], [0, 2]]
    assert locations.dtype == torch.long


def test_unknown_sensitivity_mode():
    with pytest.raises(ValueError):
        sensitivity_scores(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), "cosine")


def test_layer_sensitivity_divides_by_the_layers_mean_delta():
    zero = torch.zeros(1, 2, 2, 1)
    many = torch.tensor([[[[1.0], [3.0]], [[10.0], [30.0]]]])  # layer 1 has 10x the deltas of layer 0
    layer = sensitivity_scores(zero, many, "layer")[0]
    assert torch.allclose(layer, torch.tensor([[0.5, 1.5], [0.5, 1.5]]))  # both layers' heads on one scale
