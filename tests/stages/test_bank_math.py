import pytest
import torch

from stvcli.errors import StvError
from stvcli.stages.bank import cluster_locations


def test_kmeans_recovers_well_separated_clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]])
    labels = torch.arange(30) % 3
    points = centres[labels] + 0.05 * torch.randn(30, 3, generator=generator)
    activations = torch.stack([points, -points], dim=1)  # [T=30, K=2, D=3]
    bank, counts = cluster_locations(activations, clusters=3, seed=0)
    assert bank.shape == (2, 3, 3) and counts.shape == (2, 3)
    assert counts.sum(1).tolist() == [30, 30] and sorted(counts[0].tolist()) == [10, 10, 10]
    for k, sign in ((0, 1.0), (1, -1.0)):
        found = sorted(bank[k].round().tolist())
        assert found == sorted((sign * centres).tolist())


def test_fewer_contexts_than_clusters_is_refused():
    with pytest.raises(StvError, match="at least as many contexts"):
        cluster_locations(torch.rand(4, 1, 3), clusters=8, seed=0)


def test_context_queries_reuse_the_kept_queries_evenly():
    import random

    from stvcli.data.types import Item
    from stvcli.stages.bank import context_queries

    support = [Item(uid=str(i), question=str(i), answers=("a",)) for i in range(10)]
    queries = context_queries(support, ["0", "1", "2", "3"], 10, random.Random(0))
    uids = [q.uid for q in queries]
    assert set(uids) == {"0", "1", "2", "3"}  # no support item beyond the scan's queries is used up
    assert sorted(uids[:4]) == ["0", "1", "2", "3"]  # every kept query once before any twice
    assert sorted(uids.count(u) for u in set(uids)) == [2, 2, 3, 3]
    fresh = [q.uid for q in context_queries(support, [], 12, random.Random(0))]
    assert len(set(fresh[:10])) == 10 and len(fresh) == 12  # no kept contexts: support items in rounds
