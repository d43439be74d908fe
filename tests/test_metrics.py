"""VQA accuracy, normalisation, exact match and intervals, against hand-computed values."""

import math

import pytest

from stvcli.metrics import (
    CONTRACTIONS,
    bootstrap_interval,
    cut_answer,
    exact_match,
    majority_answer,
    normalize_vqa_answer,
    process_digit_article,
    process_punctuation,
    summarize,
    vqa_accuracy,
    vqa_accuracy_batch,
    wilson_interval,
)

OTHERS = ["blue", "green", "pink", "gray", "white", "black", "brown", "tan", "navy", "teal"]


def answers_with(matches: int, word: str = "red") -> list[str]:
    return [word] * matches + OTHERS[: 10 - matches]


# --------------------------------------------------------------------------- leave-one-out formula


@pytest.mark.parametrize("variant", ["standard", "lavis", "official"])
@pytest.mark.parametrize(("k", "expected"), [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (7, 1.0), (10, 1.0)])
def test_k_matching_answers_give_official_scores(variant, k, expected):
    assert vqa_accuracy("red", answers_with(k), variant) == pytest.approx(expected)


def test_held_out_answer_is_excluded_by_index_not_by_value():
    # By value, holding out one "red" would remove all three: (3 * 0 + 7 * 1) / 10 = 0.7.
    # By index: (3 * 2/3 + 7 * 1) / 10 = 0.9.
    assert vqa_accuracy("red", ["red", "red", "red"] + OTHERS[:7]) == pytest.approx(0.9)


def test_duplicated_answers_each_count_once_per_annotator():
    assert vqa_accuracy("cat", ["cat"] * 10) == 1.0
    assert vqa_accuracy("cat", ["cat", "cat"] + ["dog"] * 8) == pytest.approx(0.6)


def test_fewer_than_ten_answers():
    assert vqa_accuracy("cat", ["cat"]) == 1.0  # one answer: exact match
    assert vqa_accuracy("dog", ["cat"]) == 0.0
    assert vqa_accuracy("dog", ["cat", "dog", "dog"]) == pytest.approx(2 / 3)  # < 4 answers: matches / n
    # 4 answers: leave-one-out; held-out dog (x3): 2/3, held-out cat: 3/3 -> (2 + 1) / 4
    assert vqa_accuracy("dog", ["cat", "dog", "dog", "dog"]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        vqa_accuracy("dog", [])


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="variant"):
        vqa_accuracy("a", ["a"], "lenient")


def test_batch_matches_single_calls():
    preds = ["red", "Two", "no"]
    golds = [answers_with(2), ["2"] * 10, ["yes"] * 10]
    assert vqa_accuracy_batch(preds, golds) == pytest.approx([0.6, 1.0, 0.0])
    with pytest.raises(ValueError):
        vqa_accuracy_batch(["a"], [])


# --------------------------------------------------------------------------- variants (when to normalise)


@pytest.mark.parametrize(
    ("prediction", "answers", "standard", "lavis", "official"),
    [
        # answers agree and are clean; only the prediction needs normalising
        ("Yes", ["yes"] * 10, 1.0, 1.0, 0.0),
        # answers agree but are not normalised: lavis/official leave them as they are
        ("yes", ["Yes"] * 10, 1.0, 0.0, 0.0),
        # answers disagree: lavis gives them the punctuation pass only ("Two" stays "Two")
        ("two", ["Two"] * 7 + ["2"] * 3, 1.0, 0.9, 1.0),
        # punctuation in disagreeing answers is handled by all three
        ("hot dog", ["hot-dog"] * 3 + ["pizza"] * 7, 0.9, 0.9, 0.9),
    ],
)
def test_variants_differ_only_in_when_they_normalise(prediction, answers, standard, lavis, official):
    assert vqa_accuracy(prediction, answers, "standard") == pytest.approx(standard)
    assert vqa_accuracy(prediction, answers, "lavis") == pytest.approx(lavis)
    assert vqa_accuracy(prediction, answers, "official") == pytest.approx(official)


def test_unanswerable_is_an_ordinary_answer():
    assert vqa_accuracy("Unanswerable.", ["unanswerable"] * 10) == 1.0
    assert vqa_accuracy("unanswerable", ["unanswerable"] * 2 + ["red"] * 8) == pytest.approx(0.6)


# --------------------------------------------------------------------------- normalisation rules one by one


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("yes!", "yes"),  # mark not touching a space: replaced by a space, then stripped by split
        ("black-and-white", "black and white"),  # replaced by spaces
        ("hello , world", "hello world"),  # touches a space: deleted
        ("left/right", "left right"),
        ("(a) test", "test"),  # parentheses touch a space -> deleted; article dropped
        ("1,000", "1000"),  # digit,digit
        ("1,000-2,000", "10002000"),  # a digit,digit pattern deletes EVERY listed mark
        ("10:30", "10:30"),  # colon kept
        ("don't", "don't"),  # apostrophe kept
        ("mr. smith", "mr smith"),  # period not followed by a digit: dropped
        ("3.5", "3.5"),  # period before a digit: kept
        ("1.5.", "1.5"),
        ("end.", "end"),
        ("red\nsquare", "red square"),  # newline -> space
        ("\tRed  ", "red"),  # tab, case, outer spaces
        ("two dogs", "2 dogs"),  # number words
        ("none", "0"),
        ("ten", "10"),
        ("eleven", "eleven"),  # only none..ten
        ("the cat", "cat"),  # articles
        ("a dog", "dog"),
        ("an apple", "apple"),
        ("theatre", "theatre"),  # whole words only
        ("dont", "don't"),  # contractions
        ("isnt", "isn't"),
        ("whats that", "what's that"),
        ("Im", "im"),  # the official map is applied after lowercasing, so "Im" never matches
        ("unanswerable", "unanswerable"),
    ],
)
def test_normalisation(text, expected):
    assert normalize_vqa_answer(text) == expected


def test_punctuation_and_digit_article_passes_separately():
    assert process_punctuation("what?") == "what "
    assert process_punctuation("what ?") == "what "
    assert process_digit_article("The Two Dogs") == "2 dogs"


def test_contractions_table_is_the_official_one():
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS["somebody'd"] == "somebodyd"  # an official oddity, kept
    assert CONTRACTIONS["yall'd've"] == "y'all'd've"


# --------------------------------------------------------------------------- exact match


@pytest.mark.parametrize(
    ("prediction", "target", "expected"),
    [
        ("Red. It is red", "red", 1.0),
        (" blue\nnext line", "blue", 1.0),
        ("dark red", "red", 0.0),
        ("A", "A", 1.0),
        ("a.sweet william", "A", 1.0),
        ("B", "A", 0.0),
        ("sweet william", "Sweet William ", 1.0),
        ("", "A", 0.0),
    ],
)
def test_exact_match(prediction, target, expected):
    assert exact_match(prediction, target) == expected


def test_cut_answer():
    assert cut_answer(" cold\nhot: warm") == "cold"
    assert cut_answer("\n red.") == "red"
    assert cut_answer("3.5 apples") == "3"


# --------------------------------------------------------------------------- intervals


def test_wilson_interval_reference_values():
    low, high = wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson_interval(10, 10)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(3, 0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    scores = [0.0, 0.3, 0.6, 0.9, 1.0] * 8
    first = bootstrap_interval(scores, seed=1)
    assert first == bootstrap_interval(scores, seed=1)
    assert first[0] < sum(scores) / len(scores) < first[1]
    assert bootstrap_interval([0.5] * 20) == (0.5, 0.5)
    wide = bootstrap_interval(scores[:5], seed=1)
    assert wide[1] - wide[0] > first[1] - first[0]


def test_summarize_picks_the_interval_by_score_type():
    binary = summarize([1, 0, 1, 1])
    assert binary["method"] == "wilson" and binary["accuracy"] == 0.75 and binary["n"] == 4
    assert (binary["ci_low"], binary["ci_high"]) == wilson_interval(3, 4)
    fractional = summarize([0.3, 1.0, 0.0, 0.6])
    assert fractional["method"] == "bootstrap"
    assert math.isclose(fractional["accuracy"], 0.475)
    with pytest.raises(ValueError):
        summarize([])


def test_majority_answer():
    assert majority_answer(["Yes", "yes", "no"]) == "Yes"
    assert majority_answer(["cat", "dog"]) == "cat"  # ties: first seen
    assert majority_answer(["two", "2", "3"]) == "two"  # compared after normalisation


def test_mcnemar_exact_against_a_hand_computation():
    from stvcli.metrics import mcnemar_exact

    # 6 items a right / b wrong, 1 item a wrong / b right, 3 ties: two-sided binomial(7, 1/2) at <= 1
    a = [1, 1, 1, 1, 1, 1, 0, 1, 0, 1]
    b = [0, 0, 0, 0, 0, 0, 1, 1, 0, 1]
    expected = 2 * (1 + 7) / 2**7  # (C(7,0) + C(7,1)) / 2^7, doubled
    assert mcnemar_exact(a, b) == pytest.approx(expected)
    assert mcnemar_exact(a, a) == 1.0
    assert mcnemar_exact([1] * 20, [0] * 20) == pytest.approx(2 / 2**20)


def test_paired_difference_on_binary_and_fractional_scores():
    from stvcli.metrics import paired_difference

    a = [1, 1, 1, 1, 1, 1, 0, 1, 0, 1]
    b = [0, 0, 0, 0, 0, 0, 1, 1, 0, 1]
    result = paired_difference(a, b)
    assert result["difference"] == pytest.approx(0.5) and result["n"] == 10 and result["test"] == "mcnemar-exact"
    assert result["ci_low"] <= 0.5 <= result["ci_high"] and result["ci_low"] > 0
    assert result["p_value"] == pytest.approx(2 * 8 / 2**7)
    vqa = paired_difference([0.3, 1.0, 0.6, 1.0], [0.3, 0.6, 0.6, 0.0])
    assert vqa["test"] == "paired-bootstrap" and vqa["difference"] == pytest.approx(1.4 / 4)
    assert paired_difference([0.3, 0.6], [0.3, 0.6])["p_value"] == 1.0
    with pytest.raises(ValueError):
        paired_difference([1, 0], [1])
