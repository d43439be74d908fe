"""Prompt templates, targets, extraction, scoring, sampling and the task registry."""

import dataclasses
import random

import pytest
from PIL import Image

from stvcli.data.episodes import make_episode
from stvcli.data.tasks import (
    VIZWIZ_INSTRUCTION,
    ClassificationTask,
    EpisodeTask,
    TextTask,
    VQATask,
    get_task,
    list_tasks,
    register_task,
)
from stvcli.data.types import Item
from stvcli.errors import DataError


def image(value: int = 0) -> Image.Image:
    return Image.new("RGB", (4, 4), (value, 0, 0))


def vqa_item(uid: str, question: str, answer: str) -> Item:
    return Item(uid, question, (answer,) * 10, (image(),), {"target": answer})


def test_vizwiz_prompt_is_instruction_then_demonstrations_then_query():
    task = get_task("vizwiz")
    demos = [vqa_item("1", "What is this?", "a can"), vqa_item("2", "What colour?", "red")]
    prompt = task.build_prompt(vqa_item("3", "Is it hot?", "yes"), demos)
    assert prompt.text == (
        VIZWIZ_INSTRUCTION + "\n"
        "<image>What is this? Answer: a can\n"
        "<image>What colour? Answer: red\n"
        "<image>Is it hot? Answer:"
    )
    assert len(prompt.images) == 3
    assert task.default_shots == 16 and task.max_new_tokens == 20


def test_okvqa_has_no_instruction_and_ends_at_answer():
    task = get_task("okvqa")
    prompt = task.build_prompt(vqa_item("3", "Who made this?", "apple"))
    assert prompt.text == "<image>Who made this? Answer:"
    assert task.target(vqa_item("3", "Who made this?", "apple")) == " apple"


def test_lazy_images_are_loaded_into_the_prompt():
    calls = []

    def loader():
        calls.append(1)
        return Image.new("L", (4, 4))

    item = Item("1", "q", ("a",), (loader,))
    prompt = get_task("vqa").build_prompt(item)
    assert calls == [1] and prompt.images[0].mode == "RGB"


def test_extract_and_score():
    task = get_task("okvqa")
    item = Item("1", "q", ("two",) * 3 + ("2",) * 7, (image(),))
    assert task.extract(" Two dogs.\nQuestion") == "Two dogs"
    assert task.score(task.extract(" two."), item) == 1.0
    assert get_task("classification").score("Red.", Item("1", None, ("red",), (image(),))) == 1.0
    assert get_task("text").score("colder", Item("1", "hot", ("cold",))) == 0.0


def test_vqa_variant_is_a_task_parameter():
    item = Item("1", "q", ("yes",) * 10, (image(),))
    assert VQATask(name="x", variant="official").score("Yes", item) == 0.0
    assert VQATask(name="x").score("Yes", item) == 1.0
    official = dataclasses.replace(get_task("vizwiz"), variant="official")
    assert official.score("Yes", item) == 0.0 and official.instruction == VIZWIZ_INSTRUCTION
    assert get_task("vizwiz").variant == "standard"  # the registered task is untouched


def test_text_task_uses_x_colon_y_lines():
    task = get_task("text")
    demos = [Item("1", "hot", ("cold",), fields={"target": "cold"}), Item("2", "big", ("small",))]
    prompt = task.build_prompt(Item("3", "up", ("down",)), demos)
    assert prompt.text == "hot: cold\nbig: small\nup:"
    assert prompt.images == ()
    custom = TextTask(name="qa", template="{question} Answer: {answer}", instruction="Give antonyms.")
    assert custom.build_prompt(Item("3", "up", ("down",))).text == "Give antonyms.\nup Answer:"


def test_classification_uses_the_task_question_and_class_names():
    task = ClassificationTask(name="colours", question="What colour is it?")
    demo = Item("1", None, ("red",), (image(),), {"label": "red"})
    prompt = task.build_prompt(Item("2", None, ("blue",), (image(),)), [demo])
    assert prompt.text == "<image>What colour is it? Answer: red\n<image>What colour is it? Answer:"
    assert task.kind == "classification" and task.metric == "accuracy"


def test_template_validation():
    with pytest.raises(ValueError, match="end with"):
        VQATask(name="bad", template="{image}{question} Answer:")
    with pytest.raises(ValueError, match="fields"):
        VQATask(name="bad", template="{image}{context} {answer}")
    with pytest.raises(ValueError, match="variant"):
        VQATask(name="bad", variant="loose")


def test_template_with_empty_question_for_image_only_prompts():
    task = VQATask(name="colour", template="{image}{question} Answer: {answer}")
    item = Item("1", "", ("red",), (image(),))
    assert task.build_prompt(item, [item]).text == "<image> Answer: red\n<image> Answer:"


def episode(uid: str, positive: str, negative: str, seed: int = 0) -> Item:
    return make_episode(uid, image(1), f"k{uid}", positive, [(positive, [image(2)]), (negative, [image(3)])], seed)


def test_episode_prompt_matches_mtv_text():
    task = get_task("flowers")
    query = episode("q", "rose", "tulip")
    a_label, b_label = query.fields["choices"]
    line = (
        f"<image>What is the type of flower in the image? A.{a_label} B.{b_label}\n"
        "Answer with the option's letter from the given choice directly. Answer:"
    )
    prompt = task.build_prompt(query)
    assert prompt.text == f"{line} A\n{line} B\n{line}"
    assert len(prompt.images) == 3
    assert task.target(query) == " " + ("A" if a_label == "rose" else "B")


def test_episode_shots_are_complete_prior_episodes():
    task = get_task("cub")
    demos = [episode("d1", "wren", "crow"), episode("d2", "owl", "hawk")]
    prompt = task.build_prompt(episode("q", "jay", "gull"), demos)
    assert prompt.text.count("<image>") == len(prompt.images) == 9
    assert prompt.text.endswith("Answer with the option's letter from the given choice directly. Answer:")
    blocks = prompt.text.split("\n")
    # each image line is two text lines; demonstrations end with their answer letter
    assert blocks[5] == f"Answer with the option's letter from the given choice directly. Answer: {demos[0].answer}"
    assert "What is the type of bird" in blocks[0]


def test_episode_n_way_lists_all_options():
    task = EpisodeTask(name="three-way", subject="shape", ways=3)
    query = make_episode("q", image(), None, "circle", [("circle", [image()]), ("square", [image()]), ("cross", [image()])], 0)
    text = task.build_prompt(query).text
    assert "A." in text and "B." in text and "C." in text
    assert sorted(query.fields["choices"]) == ["circle", "cross", "square"]


def test_sampling_is_seeded_and_excludes_the_query():
    task = get_task("vqa")
    pool = [vqa_item(str(i), "q", "a") for i in range(20)]
    first = task.sample_demonstrations(pool, 5, random.Random(3), exclude=pool[0])
    again = task.sample_demonstrations(pool, 5, random.Random(3), exclude=pool[0])
    assert [i.uid for i in first] == [i.uid for i in again]
    assert pool[0].uid not in {i.uid for i in first}
    other = task.sample_demonstrations(pool, 5, random.Random(4), exclude=pool[0])
    assert [i.uid for i in other] != [i.uid for i in first]
    with pytest.raises(DataError, match="support pool"):
        task.sample_demonstrations(pool[:3], 3, random.Random(0), exclude=pool[0])


def test_registry():
    names = {entry["name"]: entry for entry in list_tasks()}
    assert {"vizwiz", "okvqa", "flowers", "cub", "dtd", "vqa", "classification", "text", "episode"} <= set(names)
    assert names["vizwiz"]["default_shots"] == 16 and names["vizwiz"]["metric"] == "vqa_accuracy"
    assert names["flowers"]["kind"] == "episode" and names["flowers"]["default_shots"] == 4
    assert names["okvqa"]["default_data"] == "lmms-lab/OK-VQA"
    assert all(entry["description"] for entry in names.values())
    with pytest.raises(DataError, match="unknown task 'nope'.*vizwiz"):
        get_task("nope")
    with pytest.raises(ValueError, match="already"):
        register_task(VQATask(name="vizwiz"))


def test_register_a_new_task(monkeypatch):
    from stvcli.data import tasks

    monkeypatch.setattr(tasks.TASKS, "_entries", dict(tasks.TASKS.items()))
    task = register_task(VQATask(name="shapes-colour", template="{image} Answer: {answer}", default_shots=8))
    assert get_task("shapes-colour") is task
    assert any(entry["name"] == "shapes-colour" for entry in list_tasks())
