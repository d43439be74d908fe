"""The word-mapping text tasks in examples/text-tasks/: well-formed, disjoint, loadable (no model)."""

import importlib.util
import json
from pathlib import Path

import pytest

from stvcli.data.loading import load_task_data
from stvcli.data.options import DataOptions

ROOT = Path(__file__).resolve().parents[2] / "examples" / "text-tasks"
TASK_DIRS = sorted(path.parent for path in ROOT.glob("*/train.jsonl"))
MIN_TASKS, MIN_TRAIN, MIN_TEST = 6, 120, 60


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def make_tasks_module():
    spec = importlib.util.spec_from_file_location("make_tasks", ROOT / "make_tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_enough_tasks():
    assert len(make_tasks_module().KEPT) >= MIN_TASKS
    assert len(TASK_DIRS) >= MIN_TASKS, [path.name for path in TASK_DIRS]


@pytest.mark.parametrize("folder", TASK_DIRS, ids=lambda path: path.name)
def test_files_parse_and_are_disjoint(folder):
    train, test = read(folder / "train.jsonl"), read(folder / "test.jsonl")
    assert len(train) >= MIN_TRAIN and len(test) >= MIN_TEST
    for record in train + test:
        assert set(record) == {"question", "answers"}
        assert isinstance(record["question"], str) and record["question"].strip()
        answers = record["answers"]
        assert isinstance(answers, list) and answers and all(isinstance(a, str) and a.strip() for a in answers)
        assert "." not in answers[0] and "\n" not in answers[0]  # the answer extraction cuts at '.' and newline
    for records in (train, test):
        questions = [r["question"] for r in records]
        assert len(set(questions)) == len(questions)
    assert not {r["question"] for r in train} & {r["question"] for r in test}


@pytest.mark.parametrize("folder", TASK_DIRS, ids=lambda path: path.name)
def test_load_task_data_gives_train_as_support_and_test_as_evaluation(folder):
    data = load_task_data(DataOptions(task="text", data=str(folder / "train.jsonl"), eval_data=str(folder / "test.jsonl")))
    train, test = read(folder / "train.jsonl"), read(folder / "test.jsonl")
    assert data.task.kind == "text"
    assert data.source["dropped_overlap"] == 0
    assert [item.question for item in data.support] == [r["question"] for r in train]
    assert [item.question for item in data.evaluation] == [r["question"] for r in test]
    assert [item.answer for item in data.evaluation] == [r["answers"][0] for r in test]
    assert all(item.uid.startswith("train.jsonl/") for item in data.support)
    assert all(item.uid.startswith("test.jsonl/") for item in data.evaluation)
    prompt = data.task.build_prompt(data.evaluation[0], data.support[:2]).text
    assert prompt.splitlines() == [
        f"{data.support[0].question}: {data.support[0].answer}",
        f"{data.support[1].question}: {data.support[1].answer}",
        f"{data.evaluation[0].question}:",
    ]


def test_files_are_what_make_tasks_writes(tmp_path):
    module = make_tasks_module()
    assert set(module.KEPT) <= set(module.SHIPPED)
    assert sorted(module.SHIPPED) == [path.name for path in TASK_DIRS]
    for name in module.SHIPPED:
        train, test = module.split(name, module.TASKS[name][0]())
        module.write_jsonl(tmp_path / "train.jsonl", train)
        module.write_jsonl(tmp_path / "test.jsonl", test)
        for file in ("train.jsonl", "test.jsonl"):
            assert (tmp_path / file).read_bytes() == (ROOT / name / file).read_bytes(), f"{name}/{file}"
