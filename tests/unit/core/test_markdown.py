from gpt_trader.core.markdown import markdown_table


def test_markdown_table_formats_rows_and_escapes():
    text = markdown_table([{"a": 1, "b": 0.123456, "c": "x|y"}, {"a": 2, "b": None, "c": "z"}])
    assert text.splitlines() == ["| a | b | c |", "|---|---|---|", "| 1 | 0.1235 | x\\|y |", "| 2 | - | z |"]


def test_markdown_table_empty():
    assert markdown_table([]) == "_(no rows)_\n"
