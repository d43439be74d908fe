import random

import torch

from stvcli.stages.reinforce import BernoulliPolicy, CategoricalPolicy, advantages, policy_step, split_support
from stvcli.stages.search import gather_vectors, initial_logits


def test_advantages_normalise():
    r = torch.tensor([1.0, 2.0, 3.0])
    expected = (r - 2.0) / (r.std(unbiased=False) + 1e-3)
    assert torch.allclose(advantages(r), expected)
    assert torch.allclose(advantages(torch.ones(4)), torch.zeros(4))


def test_gather_vectors_picks_one_cluster_per_location():
    bank = torch.arange(2 * 3 * 1, dtype=torch.float32).view(2, 3, 1)  # [K=2, M=3, D=1]
    choices = torch.tensor([[2, 0], [1, 1]])
    assert gather_vectors(bank, choices).squeeze(-1).tolist() == [[2.0, 3.0], [1.0, 4.0]]


def test_empty_clusters_are_never_drawn():
    policy = CategoricalPolicy(initial_logits(torch.tensor([[3, 0, 1], [0, 0, 5]])))
    draws = policy.sample(200, torch.Generator().manual_seed(0))
    assert set(draws[:, 0].tolist()) == {0, 2} and set(draws[:, 1].tolist()) == {2}


def test_categorical_log_prob_is_the_sum_over_locations():
    logits = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    policy = CategoricalPolicy(logits)
    draws = torch.tensor([[1, 0], [0, 1]])
    log_p = torch.log_softmax(logits.double(), -1)
    expected = torch.stack([log_p[0, 1] + log_p[1, 0], log_p[0, 0] + log_p[1, 1]])
    assert policy.log_prob(draws).dtype == torch.float64
    assert torch.allclose(policy.log_prob(draws), expected)


def test_bernoulli_log_prob_uses_the_clamped_probabilities():
    policy = BernoulliPolicy(torch.tensor([[0.0, 20.0]]))  # p = 0.5 and (clamped) 1 - 1e-3
    masks = torch.tensor([[1.0, 0.0]])
    expected = torch.log(torch.tensor(0.5, dtype=torch.float64)) + torch.log(torch.tensor(1e-3, dtype=torch.float64))
    assert torch.allclose(policy.log_prob(masks), expected.view(1))
    assert policy.sample(3, torch.Generator().manual_seed(0)).shape == (3, 2)


def test_categorical_reinforce_moves_toward_rewarded_choice():
    policy = CategoricalPolicy(torch.zeros(3, 4))  # K=3 locations, M=4 clusters
    optimizer = torch.optim.Adam([policy.logits], lr=0.1)
    target = torch.tensor([2, 0, 3])
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        choices = policy.sample(16, generator)
        rewards = (choices == target).float().sum(1)  # toy reward: matches with the target
        policy_step(policy, optimizer, choices, rewards)
    assert policy.greedy().tolist() == target.tolist()
    assert torch.softmax(policy.logits, -1)[torch.arange(3), target].min() > 0.5


def test_bernoulli_reinforce_learns_the_rewarded_head_set():
    policy = BernoulliPolicy(torch.full((2, 3), -1.0))
    optimizer = torch.optim.Adam([policy.logits], lr=0.1)
    good = torch.tensor([1.0, 0, 1, 0, 0, 1])
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        masks = policy.sample(32, generator)
        rewards = -(masks - good).abs().sum(1)
        policy_step(policy, optimizer, masks, rewards)
    assert (torch.sigmoid(policy.logits.flatten()) > 0.5).float().tolist() == good.tolist()


def test_split_support_is_a_seeded_shuffle():
    pool = list(range(10))
    holdout, train = split_support(pool, 3, 4)
    expected = list(pool)
    random.Random(3).shuffle(expected)
    assert holdout == expected[:4] and train == expected[4:]
