"""Data files that are not UTF-8 JSON of the right shape: one-line DataErrors naming file and line."""

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from stvcli.cli import app
from stvcli.data.loading import load_task_data
from stvcli.data.options import DataOptions
from stvcli.data.textfiles import read_json_list, read_jsonl
from stvcli.errors import DataError

ROWS = [{"question": f"q{i}", "answers": [f"a{i}"]} for i in range(6)]


def load(path, task="text", **kwargs):
    return load_task_data(DataOptions(task=task, data=str(path), **kwargs))


def lines(rows) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def test_binary_jsonl_is_not_text(tmp_path):
    path = tmp_path / "pic.jsonl"
    buffer = tmp_path / "pic.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer)
    path.write_bytes(buffer.read_bytes())
    with pytest.raises(DataError, match=r"pic\.jsonl is not UTF-8 text \(line 1: .*pass another --data"):
        load(path)


def test_nul_bytes_look_binary(tmp_path):
    path = tmp_path / "nul.jsonl"
    path.write_bytes(lines(ROWS[:2]).encode() + b"\x00\x00\x00\n")
    with pytest.raises(DataError, match=r"nul\.jsonl is not UTF-8 text \(line 3 holds NUL bytes; it looks binary\)"):
        load(path)


def test_latin1_jsonl_names_the_line_and_the_conversion(tmp_path):
    path = tmp_path / "latin.jsonl"
    rows = ROWS[:2] + [{"question": "caf\u00e9?", "answers": ["cr\u00e8me"]}] + ROWS[2:]
    path.write_bytes(lines(rows).encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.jsonl is not UTF-8 text \(line 3: byte 0xe9\); convert it to UTF-8 \(e\.g\. iconv"):
        load(path)


def test_utf16_and_utf8_bom(tmp_path):
    utf16 = tmp_path / "wide.jsonl"
    utf16.write_bytes(lines(ROWS).encode("utf-16"))
    with pytest.raises(DataError, match=r"wide\.jsonl is UTF-16 text, not UTF-8"):
        load(utf16)
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + lines(ROWS).encode())
    data = load(bom)
    assert len(data.support) + len(data.evaluation) == 6


def test_malformed_and_non_object_lines(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines(ROWS[:2]) + "\n" + '{"question": "q", "answers": [}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:4 is not valid JSON \(.*\); fix that line"):
        load(bad)
    array = tmp_path / "array.jsonl"
    array.write_text(lines(ROWS[:2]) + '["q", "a"]\n')
    with pytest.raises(DataError, match=r"array\.jsonl:3 is a JSON array, not an object"):
        load(array)


def test_missing_required_field_names_the_line(tmp_path):
    path = tmp_path / "v.jsonl"
    path.write_text(lines(ROWS[:2]) + '{"question": "q9"}\n' + lines(ROWS[2:]))
    with pytest.raises(DataError, match=r"v\.jsonl:3 has no 'answers' field \(needed for answers\); add it"):
        load(path)
    # empty answers are still a skipped row (e.g. unanswered test rows), not an error
    path.write_text(lines(ROWS) + '{"question": "q9", "answers": []}\n')
    assert load(path).source["support"]["skipped"] == 1


def test_wrong_field_types_name_the_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(lines(ROWS[:1]) + '{"question": {"text": "q"}, "answers": ["a"]}\n')
    with pytest.raises(DataError, match=r"t\.jsonl:2: 'question' \(question\) is a dict; give the question as a string"):
        load(path)
    path.write_text(lines(ROWS[:1]) + '{"question": "q", "answers": [["a"]]}\n')
    with pytest.raises(DataError, match=r"t\.jsonl:2: 'answers' \(answers\) is a list holding a list"):
        load(path)
    numbers = tmp_path / "n.jsonl"
    numbers.write_text("".join(json.dumps({"question": f"{i} + 1", "answers": i + 1}) + "\n" for i in range(4)))
    assert sorted(item.answer for item in load(numbers).support + load(numbers).evaluation)[:1] == ["1"]


def test_json_list_files(tmp_path):
    latin = tmp_path / "records.json"
    latin.write_bytes(json.dumps([{"question": "caf\u00e9", "answers": ["x"]}], ensure_ascii=False).encode("latin-1"))
    with pytest.raises(DataError, match=r"records\.json is not UTF-8 text \(line 1: byte 0xe9\)"):
        load(latin)
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps([ROWS[0], "oops"]))
    with pytest.raises(DataError, match=r"mixed\.json: entry 2 of the list is a JSON string, not an object"):
        load(mixed)
    episodes = tmp_path / "episodes.json"
    episode = {"pos": "a.png", "neg": "b.png", "query": "c.png", "pos_label": "x", "neg_label": "y"}
    episodes.write_text(json.dumps([episode, {k: v for k, v in episode.items() if k != "neg"}]))
    with pytest.raises(DataError, match=r"episodes\.json entry 2 lacks neg"):
        load(episodes, task="episode")


def test_image_folder_metadata_is_checked_too(tmp_path):
    for i in range(4):
        Image.new("RGB", (4, 4), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
    rows = [{"file_name": f"{i}.png", "question": "Qu\u00e9?", "answers": [str(i)]} for i in range(4)]
    (tmp_path / "metadata.jsonl").write_bytes(lines(rows).encode("latin-1"))
    with pytest.raises(DataError, match=r"metadata\.jsonl is not UTF-8 text \(line 1: byte 0xe9\)"):
        load(tmp_path, task="vqa")


def test_readers_keep_where_each_record_came_from(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_text(lines(ROWS[:1]) + "\n   \n" + lines(ROWS[1:2]))
    read = read_jsonl(path)
    assert [r["question"] for r in read.rows] == ["q0", "q1"]
    assert read.where == [f"{path}:1", f"{path}:4"]
    listed = tmp_path / "w.json"
    listed.write_text(json.dumps(ROWS[:2]))
    assert read_json_list(listed).where == [f"{listed} entry 1", f"{listed} entry 2"]


def test_cli_prints_one_line(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(lines([{"question": "caf\u00e9", "answers": ["x"]}] * 4).encode("latin-1"))
    result = CliRunner().invoke(app, ["scan", "--model", "m", "-w", str(tmp_path / "w"), "--task", "text", "--data", str(path)])
    assert result.exit_code == 2, result.output
    output = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(output) == 1 and "is not UTF-8 text (line 1: byte 0xe9)" in output[0], result.output
    assert "Traceback" not in result.output
