"""Append-only JSONL survives interrupted writes."""

from interp.jsonl import append_jsonl, read_jsonl


def test_appending_after_a_torn_line_starts_on_a_clean_line(tmp_path, caplog):
    path = tmp_path / "x.jsonl"
    append_jsonl(path, [{"a": 1}])
    with open(path, "a") as f:
        f.write('{"a": 2, "tor')  # a write killed halfway
    assert read_jsonl(path) == [{"a": 1}]
    append_jsonl(path, [{"a": 3}])
    assert read_jsonl(path) == [{"a": 1}, {"a": 3}]
    assert "torn last line" in caplog.text
