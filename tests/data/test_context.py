"""Context budget with a model-free token counter (one token per whitespace-separated word)."""

import pytest
from PIL import Image

from stvcli.data.context import check_icl_fits, measure_cost, shots_that_fit
from stvcli.data.tasks import TextTask, VQATask
from stvcli.data.types import Item
from stvcli.errors import DataError
from stvcli.prompt import Prompt


def words(prompt: Prompt) -> int:
    return len(prompt.text.split())


def words_and_images(prompt: Prompt) -> int:
    return len(prompt.text.replace("<image>", " ").split()) + 64 * len(prompt.images)


TASK = TextTask(name="t", max_new_tokens=20)
# "w: x" demonstrations are 2 words, the "w:" query 1 word: a k-shot prompt has 2k + 1 tokens.
SUPPORT = [Item(str(i), "w", ("x",)) for i in range(30)]


def test_measure_cost():
    cost = measure_cost(words, TASK, SUPPORT)
    assert (cost.zero_shot, cost.per_shot, cost.answer) == (1, 2.0, 20)
    assert cost.tokens(32) == 1 + 64 + 20


def test_shots_that_fit():
    assert shots_that_fit(words, TASK, SUPPORT, context_length=41) == 10  # 1 + 2*10 + 20 = 41
    assert shots_that_fit(words, TASK, SUPPORT, context_length=42) == 10
    assert shots_that_fit(words, TASK, SUPPORT, context_length=43) == 11
    assert shots_that_fit(words, TASK, SUPPORT, context_length=10_000) == 29  # capped by the pool
    assert shots_that_fit(words, TASK, SUPPORT, context_length=20) == 0


def test_check_icl_fits_raises_instead_of_truncating():
    assert check_icl_fits(words, TASK, SUPPORT, shots=10, context_length=41) == 41
    with pytest.raises(DataError, match=r"^icl:32 needs ~85 tokens but the model holds 41; use at most 10 shots$"):
        check_icl_fits(words, TASK, SUPPORT, shots=32, context_length=41)
    with pytest.raises(DataError, match="scan needs"):
        check_icl_fits(words, TASK, SUPPORT, shots=32, context_length=41, label="scan")
    with pytest.raises(DataError, match="even a zero-shot prompt"):
        check_icl_fits(words, TASK, SUPPORT, shots=1, context_length=5)


def test_images_dominate_the_budget():
    task = VQATask(name="v", max_new_tokens=20)
    image = Image.new("RGB", (2, 2))
    support = [Item(str(i), "q", ("a",), (image,)) for i in range(10)]
    # query "<image>q Answer:" = 2 words + 64; each demonstration adds 3 words + 64
    cost = measure_cost(words_and_images, task, support)
    assert (cost.zero_shot, cost.per_shot) == (66, 67.0)
    assert shots_that_fit(words_and_images, task, support, context_length=512) == (512 - 66 - 20) // 67


def test_empty_support_is_an_error():
    with pytest.raises(DataError, match="empty"):
        shots_that_fit(words, TASK, [], 100)
