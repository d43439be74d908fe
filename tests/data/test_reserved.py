"""Item text cannot inject the <image> placeholder or a model's image / special tokens."""

import json

import pytest

from stvcli.data.loading import load_task_data
from stvcli.data.options import DataOptions
from stvcli.data.reserved import check_item_text
from stvcli.data.tasks import get_task
from stvcli.data.types import Item
from stvcli.errors import DataError
from stvcli.stages.common import check_inputs


def test_question_answer_and_class_names_are_checked():
    with pytest.raises(DataError, match=r"^item v/3's question contains '<image>', which the model reserves .*; remove it"):
        check_item_text([Item("v/1", "ok", ("a",)), Item("v/3", "what is <image>?", ("a",))])
    with pytest.raises(DataError, match="item v/1's answer contains '<image>'"):
        check_item_text([Item("v/1", "q", ("<image>",))])
    episode = Item("e/0", None, ("A",), fields={"choices": ("rose", "<|im_start|>"), "target": "A"})
    with pytest.raises(DataError, match=r"item e/0's class name contains '<\|im_start\|>'"):
        check_item_text([episode], ("<image>", "<|im_start|>"))
    check_item_text([Item("v/1", "a < b > c", ("<b>",))])  # other angle brackets are text


def _vqa_with(tmp_path, question: str):
    rows = [{"question": f"what is {i}?", "answers": [str(i)]} for i in range(11)]
    rows.append({"question": question, "answers": ["x"], "question_id": "bad"})
    path = tmp_path / "v.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = load_task_data(DataOptions(task="text", data=str(path), eval_limit=2, seed=0))
    items = data.support + data.evaluation
    return data.task, items


@pytest.mark.parametrize("family", ["llava", "idefics3", "qwen2-vl", "llama"])
def test_image_placeholder_in_a_question_is_a_data_error(tiny, tmp_path, family):
    """VLMs and text models alike: a literal <image> would otherwise break the prompt
    (the processor, or ``Prompt`` itself, counts it as an image slot with no image)."""
    task, items = _vqa_with(tmp_path, "is this an <image> tag?")
    with pytest.raises(ValueError, match="placeholders"):  # what happened before: a traceback
        [task.build_prompt(item) for item in items]
    with pytest.raises(DataError, match=r"item v\.jsonl/bad's question contains '<image>'"):
        check_inputs(tiny(family), task, items, stage="scan")


@pytest.mark.parametrize(
    "family, token",
    [("idefics3", "<fake_token_around_image>"), ("idefics2", "<end_of_utterance>"), ("qwen2-vl", "<|image_pad|>"),
     ("qwen2-vl", "<|vision_start|>"), ("qwen2", "<|im_start|>"), ("llava", "</s>")],
)
def test_family_tokens_in_a_question_are_a_data_error(tiny, tmp_path, family, token):
    task, items = _vqa_with(tmp_path, f"say {token} twice")
    with pytest.raises(DataError, match=f"item v\\.jsonl/bad's question contains '{token.replace('|', '.')}'"):
        check_inputs(tiny(family), task, items, stage="search", answers=True)


def test_clean_items_pass(tiny, tmp_path):
    task, items = _vqa_with(tmp_path, "a plain question")
    assert check_inputs(tiny("llama"), get_task("text"), items, stage="search", answers=True) > 0
