"""Context budget with a model-free token counter (one token per whitespace-separated word)."""

import pytest
from PIL import Image

from stvcli.data.context import check_icl_fits, check_prompts_fit, measure_cost, shots_that_fit
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


# --------------------------------------------------------------------------- check_prompts_fit (the stages' check)


def batch_words(prompts):
    return [words(p) for p in prompts]


def test_prompts_fit_returns_the_worst_case():
    # "w:" query = 1 word, each "w: x" demonstration 2 words: the worst 8-shot prompt is 17 words
    assert check_prompts_fit(batch_words, TASK, SUPPORT[:3], SUPPORT, 8, context_length=17, stage="scan") == 17
    assert check_prompts_fit(batch_words, TASK, SUPPORT[:3], SUPPORT, 0, context_length=1, stage="search") == 1
    # with the target appended ("w: x"): 2 words; plus a reserve for generation
    assert check_prompts_fit(batch_words, TASK, SUPPORT, (), 0, context_length=2, stage="search", answers=True) == 2
    assert check_prompts_fit(batch_words, TASK, SUPPORT, (), 0, context_length=21, stage="eval", reserve=20) == 21
    with pytest.raises(DataError, match="zero-shot prompt plus 20 for generation is 21 tokens"):
        check_prompts_fit(batch_words, TASK, SUPPORT, (), 0, context_length=20, stage="eval", reserve=20)


def test_one_over_long_query_is_named():
    queries = SUPPORT[:5] + [Item("long", " ".join(["w"] * 600), ("x",))]
    with pytest.raises(DataError, match=r"^scan: item long's zero-shot prompt is 600 tokens \(a 1199-character question\); "
                                        r"the model takes 512; shorten or remove it"):
        check_prompts_fit(batch_words, TASK, queries, SUPPORT, 4, context_length=512, stage="scan")
    with pytest.raises(DataError, match="item long's prompt with its answer is 601 tokens"):
        check_prompts_fit(batch_words, TASK, queries, (), 0, context_length=512, stage="search", answers=True)


def test_an_over_long_demonstration_is_named():
    pool = SUPPORT + [Item("huge", " ".join(["w"] * 600), ("x",))]
    with pytest.raises(DataError, match="item huge.s prompt with its answer is 601 tokens"):
        check_prompts_fit(batch_words, TASK, SUPPORT[:2], pool, 2, context_length=512, stage="scan")


def test_too_many_shots_name_the_largest_that_fits():
    # worst 20-shot prompt: 1 + 2 * 20 = 41 words; 16 fit in 33 (1 + 2 * 16)
    with pytest.raises(DataError, match=r"^scan: 20 shots can need 41 tokens \(the longest query, item \d+, with the 20 "
                                        r"longest demonstrations\) but the model takes 34; use --shots 16 or fewer$"):
        check_prompts_fit(batch_words, TASK, SUPPORT[:4], SUPPORT, 20, context_length=34, stage="scan")
    with pytest.raises(DataError, match="rerun stv scan with --shots 16$"):
        check_prompts_fit(batch_words, TASK, SUPPORT[:4], SUPPORT, 20, context_length=34, stage="bank",
                          fix="rerun stv scan with --shots {n}")


def test_the_worst_case_uses_the_longest_items():
    # one long demonstration among short ones: a 2-shot prompt can hold it, so the bound counts it
    pool = SUPPORT[:10] + [Item("long", " ".join(["w"] * 30), ("x",))]
    assert check_prompts_fit(batch_words, TASK, SUPPORT[:2], pool, 2, context_length=100, stage="scan") == 1 + 31 + 2
    with pytest.raises(DataError, match="use --shots 1 or fewer"):
        check_prompts_fit(batch_words, TASK, SUPPORT[:2], pool, 2, context_length=33, stage="scan")
    with pytest.raises(DataError, match=r"not even one demonstration fits: the longest query \(item \d+\) with the "
                                        r"longest demonstration \(item long\) needs 32 tokens"):
        check_prompts_fit(batch_words, TASK, SUPPORT[:2], pool, 2, context_length=31, stage="scan")
