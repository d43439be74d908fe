"""Hub sources through local stand-ins: the presets' schemas, column mapping, offline errors.

``datasets.load_dataset`` is replaced by a function returning small in-process
``DatasetDict``s with the same column names and features as the real data sets, so the
same column-resolution code path runs as with the hub.
"""

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, List, Value

from stvcli.data.loading import load_task_data
from stvcli.data.options import DataOptions
from stvcli.data.sources import cub_class_name
from stvcli.data.synthetic import draw_image
from stvcli.errors import DataError


def images(n: int, offset: int = 0):
    return [draw_image("red", offset + i) for i in range(n)]


def vqa_split(n: int, offset: int, extra: dict, answers=None) -> Dataset:
    features = {
        "question_id": Value("string"),
        "image": Image(),
        "question": Value("string"),
        "answers": List(Value("string")),
    }
    columns = {
        "question_id": [f"q{offset + i}" for i in range(n)],
        "image": images(n, offset),
        "question": [f"What is {i}?" for i in range(n)],
        "answers": answers if answers is not None else [["red"] * 8 + ["dark red"] * 2 for _ in range(n)],
    }
    for name, (feature, values) in extra.items():
        features[name] = feature
        columns[name] = values
    return Dataset.from_dict(columns, features=Features(features))


def class_split(names: list[str], per_class: int, offset: int, extra: dict | None = None) -> Dataset:
    n = len(names) * per_class
    features = {"image": Image(), "label": ClassLabel(names=names)}
    columns = {"image": images(n, offset), "label": [i // per_class for i in range(n)]}
    for name, (feature, values) in (extra or {}).items():
        features[name] = feature
        columns[name] = values
    return Dataset.from_dict(columns, features=Features(features))


@pytest.fixture
def hub(monkeypatch):
    """Register stand-ins: hub.data[id] = DatasetDict; records load_dataset calls."""

    class Hub:
        data: dict = {}
        calls: list = []

    import datasets

    def fake_load_dataset(path, revision=None, **kwargs):
        Hub.calls.append((path, revision))
        value = Hub.data[path]
        if isinstance(value, Exception):
            raise value
        return value

    Hub.data, Hub.calls = {}, []
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    return Hub


def test_vizwiz_preset(hub):
    n = 12
    category = {"category": (Value("string"), ["other"] * n)}
    hub.data["lmms-lab/VizWiz-VQA"] = DatasetDict(
        val=vqa_split(n, 0, category),
        test=vqa_split(4, 100, {"category": (Value("string"), [""] * 4)}, answers=[[] for _ in range(4)]),
    )
    data = load_task_data(DataOptions(task="vizwiz"))  # default data of the task
    assert hub.calls == [("lmms-lab/VizWiz-VQA", None)]
    assert data.source["rule"] == "seeded split" and data.source["evaluation"]["split"] == "val"
    assert len(data.support) == len(data.evaluation) == 6
    item = data.evaluation[0]
    assert item.uid.startswith("val/q") and item.answer == "red" and len(item.answers) == 10
    assert item.fields["image_keys"][0].startswith("sha1:")
    assert item.images[0]().size == (16, 16)  # lazily decoded from the undecoded column
    assert data.task.build_prompt(item, data.support[:16 - 10]).text.startswith("First carefully")


def test_okvqa_preset(hub):
    extra = {
        "question_type": (Value("string"), ["other"] * 10),
        "answer_type": (Value("string"), ["other"] * 10),
    }
    hub.data["lmms-lab/OK-VQA"] = DatasetDict(val2014=vqa_split(10, 0, extra))
    data = load_task_data(DataOptions(task="okvqa", eval_limit=3))
    assert data.source["evaluation"]["split"] == "val2014"
    assert (len(data.support), len(data.evaluation)) == (7, 3)


def test_dtd_preset_classlabel_names(hub):
    names = ["banded", "blotchy", "braided", "bubbly"]
    hub.data["tanganke/dtd"] = DatasetDict(train=class_split(names, 3, 0), test=class_split(names, 2, 500))
    data = load_task_data(DataOptions(task="dtd"))
    assert (data.source["support"]["split"], data.source["evaluation"]["split"]) == ("train", "test")
    labels = {ep.fields["label"] for ep in data.support + data.evaluation}
    assert labels <= set(names)
    assert all(set(ep.fields["choices"]) <= set(names) for ep in data.evaluation)
    assert len(data.evaluation) == 4  # 2 evaluation classes x 2 test images


def test_flowers_preset_uses_test_for_evaluation(hub):
    names = ["pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea"]
    hub.data["dpdl-benchmark/oxford_flowers102"] = DatasetDict(
        train=class_split(names, 2, 0), validation=class_split(names, 2, 100), test=class_split(names, 2, 200)
    )
    data = load_task_data(DataOptions(task="flowers"))
    assert data.source["evaluation"]["split"] == "test"
    assert "flower" in data.task.build_prompt(data.evaluation[0]).text
    classification = load_task_data(DataOptions(task="classification", data="dpdl-benchmark/oxford_flowers102"))
    assert classification.evaluation[0].answer in names


def test_cub_preset_strips_class_numbers(hub):
    names = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross", "004.Groove_billed_Ani"]
    bbox = {"bbox": (List(Value("float32")), [[0.0, 0.0, 1.0, 1.0]] * 8)}
    hub.data["bentrevett/caltech-ucsd-birds-200-2011"] = DatasetDict(
        train=class_split(names, 2, 0, bbox), test=class_split(names, 2, 300, bbox)
    )
    data = load_task_data(DataOptions(task="cub"))
    labels = {ep.fields["label"] for ep in data.support + data.evaluation}
    assert labels <= {"Black footed Albatross", "Laysan Albatross", "Sooty Albatross", "Groove billed Ani"}
    assert cub_class_name("200.Common_Yellowthroat") == "Common Yellowthroat"


def test_string_labels_and_generic_column_mapping(hub):
    ds = Dataset.from_dict(
        {"picture": images(6), "prompt": [f"q{i}" for i in range(6)], "responses": [["a", "b"]] * 6},
        features=Features({"picture": Image(), "prompt": Value("string"), "responses": List(Value("string"))}),
    )
    hub.data["me/custom"] = DatasetDict(train=ds, validation=ds.select(range(3)))
    with pytest.raises(DataError, match=r"me/custom:train has no column for 'question', 'answers'.*--columns"):
        load_task_data(DataOptions(task="vqa", data="me/custom"))
    columns = {"image": "picture", "question": "prompt", "answers": "responses"}
    with pytest.raises(DataError, match="same data"):  # validation is a subset of train
        load_task_data(DataOptions(task="vqa", data="me/custom", columns=columns))
    data = load_task_data(DataOptions(task="vqa", data="me/custom:train", columns=columns))
    assert data.source["rule"] == "seeded split" and data.evaluation[0].answers == ("a", "b")
    labelled = Dataset.from_dict(
        {"img": images(6, 40), "kind": ["cat", "dog"] * 3},
        features=Features({"img": Image(), "kind": Value("string")}),
    )
    hub.data["me/pets"] = DatasetDict(train=labelled)
    data = load_task_data(DataOptions(task="classification", data="me/pets", columns={"label": "kind"}))
    assert {i.answer for i in data.support + data.evaluation} == {"cat", "dog"}


def test_revision_and_split_reach_load_dataset(hub):
    hub.data["me/x"] = DatasetDict(
        train=vqa_split(6, 0, {}), test=vqa_split(6, 50, {}),
    )
    data = load_task_data(DataOptions(task="vqa", data="me/x@v1.0:test"))
    assert hub.calls[-1] == ("me/x", "v1.0")
    assert data.source["support"]["split"] == data.source["evaluation"]["split"] == "test"
    load_task_data(DataOptions(task="vqa", data="me/x", revision="main"))
    assert hub.calls[-1] == ("me/x", "main")
    with pytest.raises(DataError, match="no split 'dev'"):
        load_task_data(DataOptions(task="vqa", data="me/x:dev"))


def test_multi_image_columns_decode_each_image(hub):
    ds = Dataset.from_dict(
        {"images": [images(2, 10 * i) for i in range(6)], "question": ["same or different?"] * 6, "answers": [["same"]] * 6},
        features=Features({"images": List(Image()), "question": Value("string"), "answers": List(Value("string"))}),
    )
    hub.data["me/pairs"] = DatasetDict(train=ds)
    data = load_task_data(DataOptions(task="vqa", data="me/pairs", columns={"image": "images"}))
    item = data.evaluation[0]
    first, second = (ref() for ref in item.images)
    assert first.tobytes() != second.tobytes()
    assert data.task.build_prompt(item).text == "<image><image>same or different? Answer:"


def offline_errors():
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import OfflineModeIsEnabled

    return [
        ConnectionError("Couldn't reach 'x' on the Hub (LocalEntryNotFoundError)"),
        OfflineModeIsEnabled("offline"),
        DatasetNotFoundError("Dataset 'x' doesn't exist on the Hub or cannot be accessed."),
    ]


@pytest.mark.parametrize("error", offline_errors(), ids=lambda e: type(e).__name__)
def test_offline_hub_ids_say_how_to_give_local_files(hub, error):
    hub.data["lmms-lab/VizWiz-VQA"] = error
    with pytest.raises(DataError, match=r"cannot reach the hub for lmms-lab/VizWiz-VQA.*--data path/to/file\.jsonl") as info:
        load_task_data(DataOptions(task="vizwiz"))
    assert "\n" not in str(info.value)


def test_script_data_sets_are_explained(hub):
    hub.data["old/scripted"] = RuntimeError("Dataset scripts are no longer supported, but found scripted.py")
    with pytest.raises(DataError, match="loading script"):
        load_task_data(DataOptions(task="vqa", data="old/scripted"))
