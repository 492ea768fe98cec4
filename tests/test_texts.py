import json

import pytest

from embedstore.base.errors import InputError
from embedstore.data.hashing import text_id, text_ids
from embedstore.data.texts import read_table, read_texts


def write(path, content: str | bytes):
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def test_every_format_reads_the_same_texts(tmp_path):
    texts = ['He said "hi"', "둘째 문장", "third, with comma"]
    tsv = write(tmp_path / "a.tsv", "text\tlabel\n" + "".join(f"{t}\tx\n" for t in texts))
    csv_ = write(tmp_path / "a.csv", 'text,label\n"He said ""hi""",x\n둘째 문장,x\n"third, with comma",x\n')
    jsonl = write(tmp_path / "a.jsonl", "".join(json.dumps({"text": t, "label": "x"}, ensure_ascii=False) + "\n" for t in texts))
    txt = write(tmp_path / "a.txt", "\n".join(texts) + "\n")
    for path in (tsv, csv_, jsonl, txt):
        assert read_texts(path) == texts, path


def test_pairs_and_named_columns(tmp_path):
    path = write(tmp_path / "nli.tsv", "premise\thypothesis\nA man sleeps.\tA person rests.\n")
    assert read_texts(path, "premise", "hypothesis") == [("A man sleeps.", "A person rests.")]


def test_missing_file_names_it(tmp_path):
    with pytest.raises(InputError, match="nope.tsv: no such file"):
        read_texts(tmp_path / "nope.tsv")


def test_missing_column_lists_present_ones(tmp_path):
    path = write(tmp_path / "a.tsv", "en\tko\nx\ty\n")
    with pytest.raises(InputError, match=r"no column 'text'; columns present: en, ko"):
        read_texts(path)


def test_empty_text_names_line_and_field(tmp_path):
    path = write(tmp_path / "a.tsv", "en\tko\nx\ty\n \tz\n")
    with pytest.raises(InputError, match=r"a.tsv: line 3: field 'en' is empty"):
        read_texts(path, "en")


def test_invalid_utf8_names_line(tmp_path):
    path = write(tmp_path / "a.txt", b"fine\nalso fine\nbad \xff byte\n")
    with pytest.raises(InputError, match=r"a.txt: line 3: invalid UTF-8"):
        read_texts(path)


def test_wrong_field_count_and_unknown_format(tmp_path):
    path = write(tmp_path / "a.tsv", "en\tko\nx\ty\tz\n")
    with pytest.raises(InputError, match=r"line 2: 3 tab-separated fields; expected 2"):
        read_texts(path, "en")
    with pytest.raises(InputError, match=r"unknown format '.xlsx'"):
        read_texts(write(tmp_path / "a.xlsx", "x"))


def test_errors_are_one_line(tmp_path):
    path = write(tmp_path / "a.jsonl", '{"text": "ok"}\n[1, 2]\n')
    with pytest.raises(InputError) as e:
        read_table(path, ["text"])
    assert "\n" not in str(e.value) and "line 2" in str(e.value)


def test_ids_are_normalised_and_pairs_differ():
    decomposed, composed = "e\u0301t\u00e9", "\u00e9t\u00e9"
    assert text_id(decomposed) == text_id(composed) == text_id(f"  {composed} ")
    assert text_id(("a", "b")) != text_id("a b") != text_id(("b", "a"))
    ids = text_ids(["x", "y", "x"])
    assert ids.shape == (3, 16) and (ids[0] == ids[2]).all() and not (ids[0] == ids[1]).all()
