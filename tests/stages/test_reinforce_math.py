import torch

from stvcli.stages.mtv import bernoulli_step, sample_masks
from stvcli.stages.reinforce import advantages
from stvcli.stages.search import gather_vectors, policy_step, sample_choices


def test_advantages_normalise():
    r = torch.tensor([1.0, 2.0, 3.0])
    expected = (r - 2.0) / (r.std(unbiased=False) + 1e-3)
    assert torch.allclose(advantages(r), expected)
    assert torch.allclose(advantages(torch.ones(4)), torch.zeros(4))


def test_gather_vectors_picks_one_cluster_per_location():
    bank = torch.arange(2 * 3 * 1, dtype=torch.float32).view(2, 3, 1)  # [K=2, M=3, D=1]
    choices = torch.tensor([[2, 0], [1, 1]])
    assert gather_vectors(bank, choices).squeeze(-1).tolist() == [[2.0, 3.0], [1.0, 4.0]]


def test_categorical_reinforce_moves_toward_rewarded_choice():
    logits = torch.zeros(3, 4, requires_grad=True)  # K=3 locations, M=4 clusters
    optimizer = torch.optim.Adam([logits], lr=0.1)
    target = torch.tensor([2, 0, 3])
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        choices = sample_choices(logits, 16, generator)
        rewards = (choices == target).float().sum(1)  # toy reward: matches with the target
        policy_step(logits, optimizer, choices, rewards)
    assert logits.argmax(-1).tolist() == target.tolist()
    assert torch.softmax(logits, -1)[torch.arange(3), target].min() > 0.5


def test_bernoulli_reinforce_learns_the_rewarded_head_set():
    logits = torch.full((6,), -1.0, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=0.1)
    good = torch.tensor([1.0, 0, 1, 0, 0, 1])
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        masks = sample_masks(logits, 32, generator)
        rewards = -(masks - good).abs().sum(1)
        bernoulli_step(logits, optimizer, masks, rewards)
    assert (torch.sigmoid(logits) > 0.5).float().tolist() == good.tolist()
