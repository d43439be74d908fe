"""Synthetic data writers are deterministic and load through the real loaders."""

import json

from stvcli.data import synthetic


def test_vqa_jsonl_is_deterministic(tmp_path):
    first = synthetic.write_vqa_jsonl(tmp_path / "a", n=5, seed=3)
    second = synthetic.write_vqa_jsonl(tmp_path / "b", n=5, seed=3)
    assert first.read_text() == second.read_text()
    record = json.loads(first.read_text().splitlines()[0])
    assert len(record["answers"]) == 10 and record["answers"].count(record["answers"][0]) >= 1
    image = record["image"]
    assert (first.parent / image).read_bytes() == (second.parent / image).read_bytes()
    other = synthetic.write_vqa_jsonl(tmp_path / "c", n=5, seed=4)
    assert other.read_text() != first.read_text()


def test_images_are_unique_per_seed():
    a, b = synthetic.draw_image("red", 1), synthetic.draw_image("red", 2)
    assert a.tobytes() != b.tobytes() and a.tobytes() == synthetic.draw_image("red", 1).tobytes()
    assert a.getpixel((0, 0))[0] > a.getpixel((0, 0))[2]  # red stays red under the noise


def test_imagefolder_layout(tmp_path):
    root = synthetic.write_classification_imagefolder(tmp_path, classes=("a", "b"), per_class=2, splits=("train", "test"))
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png")) == [
        "test/a/img_0.png", "test/a/img_1.png", "test/b/img_0.png", "test/b/img_1.png",
        "train/a/img_0.png", "train/a/img_1.png", "train/b/img_0.png", "train/b/img_1.png",
    ]  # fmt: skip


def test_episodes_follow_mtv_format(tmp_path):
    path = synthetic.write_episodes(tmp_path, classes=("a", "b", "c"), per_class=2)
    episodes = json.loads(path.read_text())
    assert len(episodes) == 6
    for ep in episodes:
        assert set(ep) == {"pos", "neg", "query", "pos_label", "neg_label"}
        assert ep["pos"] != ep["query"] and ep["pos_label"] != ep["neg_label"]
        assert ep["query"].startswith("./images/") and (tmp_path / ep["query"]).is_file()


def test_text_jsonl(tmp_path):
    path = synthetic.write_text_jsonl(tmp_path, [("hot", "cold")])
    assert json.loads(path.read_text()) == {"question_id": 0, "question": "hot", "answers": ["cold"]}
