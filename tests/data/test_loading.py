"""load_task_data on local sources: split rules, disjointness, limits and the errors."""

import json
import shutil

import pytest
from PIL import Image

from stvcli.data import sources
from stvcli.data.loading import check_support_size, load_task_data, split_items
from stvcli.data.options import DataOptions
from stvcli.data.types import Item
from stvcli.errors import DataError
from stvcli.registry import Registry, load_plugins


def load(**kwargs):
    return load_task_data(DataOptions(**kwargs))


def uids(items):
    return [item.uid for item in items]


# --------------------------------------------------------------------------- one source, seeded split


def test_one_file_is_split_in_half_reproducibly(vqa_jsonl):
    data = load(task="okvqa", data=str(vqa_jsonl))
    assert len(data.support) == len(data.evaluation) == 10
    assert not set(uids(data.support)) & set(uids(data.evaluation))
    assert data.source["rule"] == "seeded split"
    again = load(task="okvqa", data=str(vqa_jsonl))
    assert uids(again.evaluation) == uids(data.evaluation)
    other = load(task="okvqa", data=str(vqa_jsonl), seed=1)
    assert uids(other.evaluation) != uids(data.evaluation)


def test_items_carry_answers_target_and_lazy_images(vqa_jsonl):
    data = load(task="okvqa", data=str(vqa_jsonl))
    item = data.evaluation[0]
    assert item.uid.startswith("vqa.jsonl/") and len(item.answers) == 10
    assert item.answer == max(set(item.answers), key=item.answers.count)
    assert callable(item.images[0]) and item.images[0]().size == (16, 16)
    prompt = data.task.build_prompt(item, data.support[:2])
    assert len(prompt.images) == 3


def test_eval_limit_sizes_the_evaluation_side(vqa_jsonl):
    data = load(task="okvqa", data=str(vqa_jsonl), eval_limit=3)
    assert (len(data.support), len(data.evaluation)) == (17, 3)
    data = load(task="okvqa", data=str(vqa_jsonl), eval_limit=15)
    assert (len(data.support), len(data.evaluation)) == (10, 10)  # at most half
    data = load(task="okvqa", data=str(vqa_jsonl), support_limit=4, eval_limit=3)
    assert (len(data.support), len(data.evaluation)) == (4, 3)


def test_same_file_twice_is_one_source(vqa_jsonl):
    data = load(task="okvqa", data=str(vqa_jsonl), eval_data=str(vqa_jsonl))
    assert data.source["rule"] == "seeded split"


def test_duplicates_stay_on_one_side():
    image = Image.new("RGB", (2, 2))
    items = [Item(str(i), "same question", ("a",), (image,)) for i in range(4)]
    items += [Item(f"x{i}", f"q{i}", ("a",), (Image.new("RGB", (2, 2), (i, 9, 9)),)) for i in range(4)]
    support, evaluation = split_items(items, seed=0, eval_limit=None)
    duplicates = {"0", "1", "2", "3"}
    assert duplicates <= set(uids(support)) or duplicates <= set(uids(evaluation))


# --------------------------------------------------------------------------- two sources


def test_copy_of_the_same_items_is_refused(vqa_jsonl, tmp_path):
    copy = vqa_jsonl.parent / "copy.jsonl"
    shutil.copy(vqa_jsonl, copy)
    with pytest.raises(DataError, match="same data"):
        load(task="okvqa", data=str(vqa_jsonl), eval_data=str(copy))


def test_partial_overlap_is_dropped_from_the_support_pool(vqa_jsonl):
    lines = vqa_jsonl.read_text().splitlines()
    records = [json.loads(line) for line in lines[:5]]
    records += [dict(json.loads(line), question="Another question?") for line in lines[5:10]]
    other = vqa_jsonl.parent / "partial.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in records))
    data = load(task="okvqa", data=str(vqa_jsonl), eval_data=str(other))
    assert data.source["rule"] == "splits" and data.source["dropped_overlap"] == 5
    assert (len(data.support), len(data.evaluation)) == (15, 10)
    support_keys = {(i.question, i.fields["image_keys"]) for i in data.support}
    assert not support_keys & {(i.question, i.fields["image_keys"]) for i in data.evaluation}


def test_image_folder_splits(split_folder):
    data = load(task="classification", data=str(split_folder))
    assert (data.source["support"]["split"], data.source["evaluation"]["split"]) == ("train", "test")
    assert data.evaluation[0].uid.startswith("test/") and data.evaluation[0].answer in {"red", "green", "blue", "yellow"}
    data = load(task="classification", data=f"{split_folder}:test")
    assert data.source["rule"] == "seeded split" and len(data.support) == len(data.evaluation) == 8
    data = load(task="classification", data=str(split_folder), support_split="test", eval_split="train")
    assert data.source["support"]["split"] == "test"
    data = load(task="classification", data=str(split_folder), support_split="test")
    assert (data.source["support"]["split"], data.source["evaluation"]["split"]) == ("test", "train")
    data = load(task="classification", data=str(split_folder), eval_split="train")
    assert (data.source["support"]["split"], data.source["evaluation"]["split"]) == ("test", "train")
    with pytest.raises(DataError, match="no split 'dev'"):
        load(task="classification", data=str(split_folder), eval_split="dev")


def test_metadata_image_folder(tmp_path):
    for i in range(6):
        Image.new("RGB", (4, 4), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
    rows = [{"file_name": f"{i}.png", "question": "Which?", "answers": [str(i)]} for i in range(6)]
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load(task="vqa", data=str(tmp_path))
    assert len(data.support) + len(data.evaluation) == 6
    assert data.evaluation[0].images[0]().size == (4, 4)


# --------------------------------------------------------------------------- text, columns, errors


def test_text_records_without_images(text_jsonl, tmp_path):
    data = load(task="text", data=str(text_jsonl))
    assert len(data.support) + len(data.evaluation) == 16
    assert data.evaluation[0].images == ()
    assert data.task.build_prompt(data.evaluation[0], data.support[:1]).text.count("\n") == 1
    single = tmp_path / "one.jsonl"
    single.write_text('{"question": "hot", "answer": "cold"}\n{"question": "up", "answer": "down"}\n')
    data = load(task="text", data=str(single))
    assert sorted(i.answer for i in data.support + data.evaluation) == ["cold", "down"]


def test_missing_columns_name_the_fix(tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}", "reply": ["r"]}) + "\n" for i in range(4)))
    with pytest.raises(DataError, match=r"no column for 'question', 'answers'.*--columns question=<column> answers=<column>"):
        load(task="text", data=str(path))
    data = load(task="text", data=str(path), columns={"question": "prompt", "answers": "reply"})
    assert data.evaluation[0].question.startswith("p")
    with pytest.raises(DataError, match="has no column 'nope'"):
        load(task="text", data=str(path), columns={"question": "nope", "answers": "reply"})
    with pytest.raises(DataError, match="not one of"):
        load(task="text", data=str(path), columns={"query": "prompt"})


def test_missing_and_unreadable_images(tmp_path):
    rows = [{"image": f"img{i}.png", "question": "q", "answers": ["a"], "question_id": i} for i in range(4)]
    path = tmp_path / "v.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="4 of 4 images of v.jsonl are missing.*--image-root"):
        load(task="vqa", data=str(path))
    elsewhere = tmp_path / "pics"
    elsewhere.mkdir()
    for i in range(4):
        (elsewhere / f"img{i}.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image"):
        load(task="vqa", data=str(path), image_root=str(elsewhere))


def test_bad_json_lines_and_empty_sets(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answers": ["a"]}\n{oops\n')
    with pytest.raises(DataError, match="bad.jsonl:2 is not valid JSON"):
        load(task="text", data=str(bad))
    one = tmp_path / "one.jsonl"
    one.write_text('{"question": "q", "answers": ["a"]}\n')
    with pytest.raises(DataError, match="no evaluation items"):
        load(task="text", data=str(one))
    unanswered = tmp_path / "unanswered.jsonl"
    unanswered.write_text("".join('{"question": "q%d", "answers": []}\n' % i for i in range(4)))
    with pytest.raises(DataError, match=r"no support items .* \(4 rows without answers or a label were skipped\)"):
        load(task="text", data=str(unanswered))


def test_support_pool_too_small_for_shots(vqa_jsonl):
    data = load(task="okvqa", data=str(vqa_jsonl), support_limit=4)
    check_support_size(data, 3)
    with pytest.raises(DataError, match="4 items; 4 shots need at least 5"):
        check_support_size(data, 4)
    check_support_size(data, 4, queries_from_support=False)


def test_tasks_without_default_data_need_data():
    with pytest.raises(DataError, match="give one with --data"):
        load(task="vqa")
    with pytest.raises(DataError, match="unknown task"):
        load(task="nope", data="x.jsonl")


# --------------------------------------------------------------------------- episodes


def test_mtv_episode_file_is_split_by_positive_class(episodes_json):
    data = load(task="flowers", data=str(episodes_json))
    support_classes = {i.fields["label"] for i in data.support}
    eval_classes = {i.fields["label"] for i in data.evaluation}
    assert len(eval_classes) == 2 and not support_classes & eval_classes
    first = data.evaluation[0]
    assert first.answer in "AB" and len(first.fields["support"]) == 2 and callable(first.images[0])
    assert [i.answer for i in load(task="flowers", data=str(episodes_json)).evaluation] == [i.answer for i in data.evaluation]


def test_mtv_files_with_shared_positive_classes_are_refused(episodes_json, tmp_path):
    episodes = json.loads(episodes_json.read_text())
    second = tmp_path / "test.json"
    second.write_text(json.dumps([dict(e, query=e["pos"]) for e in episodes]))
    with pytest.raises(DataError, match="share 4 positive classes"):
        load(task="flowers", data=str(episodes_json), eval_data=str(second), image_root=str(episodes_json.parent))


def test_mtv_train_and_test_files(episodes_json, tmp_path):
    episodes = json.loads(episodes_json.read_text())
    train = tmp_path / "train.json"
    test = tmp_path / "test.json"
    train.write_text(json.dumps([e for e in episodes if e["pos_label"] in ("red", "green")]))
    test.write_text(json.dumps([e for e in episodes if e["pos_label"] in ("blue", "yellow")]))
    data = load(task="dtd", data=str(train), eval_data=str(test), image_root=str(episodes_json.parent))
    assert data.source["rule"] == "splits" and len(data.support) == len(data.evaluation) == 6
    with pytest.raises(DataError, match="episode task"):
        load(task="classification", data=str(train), image_root=str(episodes_json.parent))


def test_episodes_drawn_from_labelled_splits(split_folder):
    data = load(task="dtd", data=str(split_folder))
    support_pos = {i.fields["label"] for i in data.support}
    eval_pos = {i.fields["label"] for i in data.evaluation}
    assert len(support_pos) == len(eval_pos) == 2 and not support_pos & eval_pos
    assert len(data.evaluation) == 8  # 2 classes x 4 test images
    prompt = data.task.build_prompt(data.evaluation[0], data.support[:2])
    assert "texture" in prompt.text and len(prompt.images) == 9


def test_episodes_from_one_unsplit_source(data_root):
    from stvcli.data.synthetic import write_classification_jsonl

    path = write_classification_jsonl(data_root / "cls", classes=("a", "b", "c", "d"), per_class=6)
    data = load(task="episode", data=str(path))
    assert data.source["rule"] == "seeded split"
    assert not {i.fields["label"] for i in data.support} & {i.fields["label"] for i in data.evaluation}
    support_images = {ref.path for ep in data.support for ref, _ in ep.fields["support"]}
    support_images |= {ep.images[0].path for ep in data.support}
    assert not support_images & {ep.images[0].path for ep in data.evaluation}


# --------------------------------------------------------------------------- plugin sources


@pytest.fixture
def plugin_registry(monkeypatch):
    load_plugins()  # before the swap, so plugins register with the real registry
    monkeypatch.setattr(sources, "SOURCES", Registry("data source", error=DataError))
    return sources


def memory_items(prefix: str, n: int, offset: int = 0) -> list[Item]:
    return [
        Item(f"{prefix}{i}", "", ("red",), (Image.new("RGB", (4, 4), (i + offset, 0, 0)),), {"target": "red"})
        for i in range(n)
    ]


def test_registered_source_hands_over_items(plugin_registry):
    seen = []

    def loader(options):
        seen.append(options.data)
        return memory_items("s", 6), memory_items("e", 4, offset=100)

    plugin_registry.register_source("shapes", loader)
    data = load(task="vqa", data="shapes:colour", support_limit=5)
    assert seen == ["shapes:colour"]
    assert (len(data.support), len(data.evaluation)) == (5, 4)
    assert data.source["rule"] == "plugin"
    with pytest.raises(ValueError, match="already registered"):
        plugin_registry.register_source("shapes", loader)
    with pytest.raises(ValueError, match="bad source prefix"):
        plugin_registry.register_source("hf", loader)


def test_registered_source_is_not_an_eval_source(plugin_registry, vqa_jsonl):
    plugin_registry.register_source("mem", lambda options: (memory_items("s", 4), memory_items("e", 4, 50)))
    with pytest.raises(DataError, match="pass it as --data"):
        load(task="vqa", data=str(vqa_jsonl), eval_data="mem:x")


def test_registered_source_overlap_is_checked(plugin_registry):
    plugin_registry.register_source("same", lambda options: (memory_items("s", 4), memory_items("e", 4)))
    with pytest.raises(DataError, match="same data"):
        load(task="vqa", data="same:x")
