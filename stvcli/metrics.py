"""Scores: VQA accuracy (official leave-one-out formula), exact match, 95% intervals.

VQA normalisation reproduces the official VQA evaluation (GT-Vision-Lab ``vqaEval.py``):
its contractions map, number words, articles, punctuation list and the two regular
expressions, applied in the same order. The three variants differ only in WHEN they
normalise (see ``vqa_accuracy``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Literal

import numpy as np

VQAVariant = Literal["standard", "lavis", "official"]
VQA_VARIANTS: tuple[str, ...] = ("standard", "lavis", "official")

# ---------------------------------------------------------------------------------------
# The official tables (vqaEval.py), reproduced verbatim, including its oddities
# ("somebody'd" -> "somebodyd", "let's" -> "let's").
# ---------------------------------------------------------------------------------------
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}  # fmt: skip
MANUAL_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES: tuple[str, ...] = ("a", "an", "the")
PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip
# The official expressions. ``(?!<=\d)`` is a (harmless) typo for a lookbehind in the
# original: it only means "not followed by '<=' + digit", so a period is dropped unless
# a digit FOLLOWS it. Kept as is so scores match the official tool.
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")


def process_punctuation(text: str) -> str:
    """The official punctuation pass.

    Each listed mark is deleted when it touches a space (or the text has a digit,digit
    pattern), else replaced by a space; then periods not followed by a digit go.
    Colons and apostrophes are kept.
    """
    out = text
    has_digit_comma = COMMA_STRIP.search(text) is not None
    for mark in PUNCTUATION:
        if (mark + " " in text or " " + mark in text) or has_digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return PERIOD_STRIP.sub("", out)


def process_digit_article(text: str) -> str:
    """Lowercase, number words -> digits, drop articles, apply the contractions map."""
    words = [MANUAL_MAP.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in ARTICLES]
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def _clean_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def normalize_vqa_answer(text: str) -> str:
    """Full official normalisation: whitespace, punctuation, then digits/articles/contractions."""
    return process_digit_article(process_punctuation(_clean_whitespace(text)))


def _leave_one_out(prediction: str, answers: Sequence[str]) -> float:
    """Mean over held-out answers (by index) of min(1, matches among the others / 3).

    Fewer than 4 answers (no held-out subset could reach 3 matches): min(1, matches / n),
    so one gold answer means exact match.
    """
    n = len(answers)
    matches = [answer == prediction for answer in answers]
    total = sum(matches)
    if n < 4:
        return min(1.0, total / n)
    return sum(min(1.0, (total - held_out) / 3.0) for held_out in matches) / n


def vqa_accuracy(prediction: str, answers: Sequence[str], variant: VQAVariant | str = "standard") -> float:
    """VQA accuracy in [0, 1] of one prediction against the human answers.

    ``variant`` sets WHEN the official normalisation runs:

    - ``standard``: prediction and answers always fully normalised (lmms-eval style).
    - ``lavis``: the prediction always fully normalised; the answers get the punctuation
      pass only, and only when they disagree -- exactly the code of LAVIS and the
      GT-Vision-Lab evaluator, which MTV's numbers used.
    - ``official``: prediction and answers fully normalised only when the answers
      disagree (otherwise only newlines/tabs -> spaces and strip).

    10 answers give 0, .3, .6, .9, 1 for 0..4 matches (leave-one-out by index, so
    duplicates count once per annotator). See ``_leave_one_out`` for fewer answers.
    """
    if variant not in VQA_VARIANTS:
        raise ValueError(f"unknown VQA accuracy variant {variant!r}; use one of {', '.join(VQA_VARIANTS)}")
    if not answers:
        raise ValueError("vqa_accuracy needs at least one gold answer")
    golds = [_clean_whitespace(answer) for answer in answers]
    disagree = len(set(golds)) > 1
    pred = _clean_whitespace(prediction)
    if variant == "standard":
        pred = normalize_vqa_answer(pred)
        golds = [normalize_vqa_answer(answer) for answer in golds]
    elif variant == "lavis":
        pred = normalize_vqa_answer(pred)
        if disagree:
            golds = [process_punctuation(answer) for answer in golds]
    elif disagree:  # official
        pred = normalize_vqa_answer(pred)
        golds = [normalize_vqa_answer(answer) for answer in golds]
    return _leave_one_out(pred, golds)


def vqa_accuracy_batch(
    predictions: Sequence[str], answers_list: Sequence[Sequence[str]], variant: VQAVariant | str = "standard"
) -> list[float]:
    """``vqa_accuracy`` for each (prediction, answers) pair."""
    if len(predictions) != len(answers_list):
        raise ValueError(f"{len(predictions)} predictions but {len(answers_list)} answer lists")
    return [vqa_accuracy(p, a, variant) for p, a in zip(predictions, answers_list)]


def cut_answer(generation: str) -> str:
    """The answer part of a generation: leading whitespace dropped, cut at the first '.' or newline."""
    text = generation.lstrip()
    for stop in (".", "\n"):
        text = text.split(stop, 1)[0]
    return text.strip()


def cut_is_final(generation: str) -> bool:
    """Whether ``cut_answer`` of any continuation of ``generation`` equals that of
    ``generation`` itself: a '.' or newline follows the leading whitespace."""
    text = generation.lstrip()
    return "." in text or "\n" in text


def exact_match(prediction: str, target: str) -> float:
    """1.0 when the prediction, cut at '.' and newline, stripped and lowercased, equals the target."""
    return float(cut_answer(prediction).lower() == target.strip().lower())


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (0/1 scores)."""
    if n <= 0:
        raise ValueError("wilson_interval needs n > 0")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, {n}], got {successes}")
    z = _z_value(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def bootstrap_interval(
    scores: Sequence[float], seed: int = 0, n_resamples: int = 2000, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (fractional scores such as VQA accuracy)."""
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        raise ValueError("bootstrap_interval needs at least one score")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_resamples, values.size))
    means = values[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def summarize(scores: Sequence[float], seed: int = 0, confidence: float = 0.95) -> dict[str, float | int | str]:
    """Mean accuracy (a fraction in [0, 1]) with a 95% interval.

    Wilson for 0/1 scores, percentile bootstrap (seeded) for fractional ones;
    ``method`` says which.
    """
    values = [float(s) for s in scores]
    if not values:
        raise ValueError("summarize needs at least one score")
    n = len(values)
    if all(v in (0.0, 1.0) for v in values):
        low, high = wilson_interval(int(sum(values)), n, confidence)
        method = "wilson"
    else:
        low, high = bootstrap_interval(values, seed=seed, confidence=confidence)
        method = "bootstrap"
    return {"accuracy": sum(values) / n, "ci_low": low, "ci_high": high, "n": n, "method": method}


def _z_value(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError("confidence must lie in (0, 1)")
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def majority_answer(answers: Sequence[str]) -> str:
    """The most frequent answer (compared after full normalisation; ties: first seen).

    Returned as written (stripped), for use as a demonstration's answer.
    """
    if not answers:
        raise ValueError("majority_answer needs at least one answer")
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for answer in answers:
        key = normalize_vqa_answer(answer)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, answer.strip())
    best = max(counts, key=lambda key: counts[key])  # max keeps the first of equal counts
    return first[best]


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 scores: a binomial test (p = 1/2)
    on the discordant pairs (a right and b wrong: n10; a wrong and b right: n01)."""
    n10 = sum(1 for x, y in zip(a, b, strict=True) if x > y)
    n01 = sum(1 for x, y in zip(a, b, strict=True) if x < y)
    n = n10 + n01
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(n10, n01) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_difference(a: Sequence[float], b: Sequence[float], seed: int = 0, n_resamples: int = 2000,
                      confidence: float = 0.95) -> dict[str, float | int | str]:
    """mean(a) - mean(b) over the same items, with a paired 95% interval and p-value.

    The interval is the percentile bootstrap of the per-item differences (seeded). The
    p-value is the exact McNemar test for 0/1 scores, else the paired bootstrap's
    two-sided p (the share of resampled mean differences on the other side of zero,
    doubled). ``test`` says which.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.size == 0:
        raise ValueError("paired_difference needs two equally long, non-empty score lists")
    diffs = x - y
    low, high = bootstrap_interval(diffs.tolist(), seed=seed, n_resamples=n_resamples, confidence=confidence)
    binary = bool(np.isin(x, (0.0, 1.0)).all() and np.isin(y, (0.0, 1.0)).all())
    if binary:
        p_value, test = mcnemar_exact(x.tolist(), y.tolist()), "mcnemar-exact"
    else:
        rng = np.random.default_rng(seed)
        means = diffs[rng.integers(0, diffs.size, size=(n_resamples, diffs.size))].mean(axis=1)
        if not diffs.any():
            p_value = 1.0
        else:
            p_value = min(1.0, 2 * min(float((means <= 0).mean()), float((means >= 0).mean())))
        test = "paired-bootstrap"
    return {"difference": float(diffs.mean()), "ci_low": low, "ci_high": high, "p_value": p_value,
            "n": int(diffs.size), "test": test}
