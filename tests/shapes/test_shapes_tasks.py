"""The shapes tasks and the ``shapes:`` source through the generic data loader."""

from __future__ import annotations

import pytest

from stvcli.data.loading import load_task_data
from stvcli.data.options import DataOptions
from stvcli.data.tasks import get_task, list_tasks
from stvcli.errors import DataError
from stvcli.shapes.tasks import shapes_tasks

NAMES = [task.name for task in shapes_tasks()]


def test_brief_names_are_registered() -> None:
    listed = {row["name"] for row in list_tasks()}
    assert {"shapes-color", "shapes-fruit", "shapes-vqa", "shapes-episode"} <= listed
    assert set(NAMES) <= listed


@pytest.mark.parametrize("name", NAMES)
def test_every_task_loads_from_its_default_source(name: str) -> None:
    data = load_task_data(DataOptions(task=name, eval_limit=20, support_limit=40))
    assert len(data.evaluation) == 20 and len(data.support) == 40
    assert data.source["dropped_overlap"] == 0
    prompt = data.task.build_prompt(data.evaluation[0], data.support[:3])
    assert prompt.text.endswith("Answer:")
    assert data.task.target(data.evaluation[0]).startswith(" ")


def test_naming_prompt_format() -> None:
    data = load_task_data(DataOptions(task="shapes-color", data="shapes:color", eval_limit=5))
    demos = data.support[:2]
    prompt = data.task.build_prompt(data.evaluation[0], demos)
    assert prompt.text == f"<image> Answer: {demos[0].answer}\n<image> Answer: {demos[1].answer}\n<image> Answer:"
    assert len(prompt.images) == 3 and prompt.images[0].size == (32, 32)
    assert data.task.score(data.task.extract(f" {data.evaluation[0].answer}\n<image>"), data.evaluation[0]) == 1.0


def test_naming_tasks_answer_with_their_first_token() -> None:
    naming = [task for task in shapes_tasks() if task.kind == "classification"]
    assert len(naming) == len(NAMES) - 2  # all but vqa and episode
    assert all(task.max_new_tokens == 1 for task in naming)


@pytest.mark.parametrize("spec", ["shapes:fruit", "shapes:shapes-fruit", "shapes:Fruit"])
def test_source_names(spec: str) -> None:
    data = load_task_data(DataOptions(task="shapes-fruit", data=spec, eval_limit=5))
    assert data.evaluation[0].answer in {"lemon", "plum", "cherry", "grape", "banana", "apple"}


def test_colour_spelling_alias() -> None:
    data = load_task_data(DataOptions(task="shapes-color", data="shapes:colour", eval_limit=5))
    assert len(data.evaluation) == 5


def test_mismatched_kind_and_unknown_names_are_one_line_errors() -> None:
    with pytest.raises(DataError, match="use --task shapes-color"):
        load_task_data(DataOptions(task="shapes-vqa", data="shapes:color"))
    with pytest.raises(DataError, match="unknown shapes data"):
        load_task_data(DataOptions(task="shapes-color", data="shapes:magenta"))


def test_seed_changes_the_world_and_limits_grow_it() -> None:
    a = load_task_data(DataOptions(task="shapes-color", seed=0, eval_limit=10))
    b = load_task_data(DataOptions(task="shapes-color", seed=1, eval_limit=10))
    assert [i.fields["image_keys"] for i in a.evaluation] != [i.fields["image_keys"] for i in b.evaluation]
    big = load_task_data(DataOptions(task="shapes-color", eval_limit=500, support_limit=2000))
    assert len(big.evaluation) == 500 and len(big.support) == 2000


def test_vqa_task_scores_unanswerable() -> None:
    data = load_task_data(DataOptions(task="shapes-vqa", eval_limit=200))
    empty = next(i for i in data.evaluation if i.fields["scene"].empty)
    assert data.task.score("unanswerable", empty) == 1.0
    assert get_task("shapes-vqa").metric == "vqa_accuracy"
