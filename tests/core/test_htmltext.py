from __future__ import annotations

import tracemalloc

from mailsupport.core.htmltext import STREAM_AT_LEAST, html_to_text

ROW = "<tr><td>cell</td><td>value &amp; more</td></tr>\r\n"


def _table(rows: int) -> str:
    return (
        f"<html><head><style>td {{}}</style></head><body><p>Report</p><table>{ROW * rows}</table>"
    )


def test_a_huge_html_table_is_rendered_in_a_few_times_its_size() -> None:
    html = _table(1_000_000 // len(ROW))
    tracemalloc.start()
    try:
        text = html_to_text(html)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The lxml tree and layout inscriptis builds took about 60 times the HTML.
    assert peak < 6 * len(html)
    assert text.startswith("Report\ncell  value & more\ncell  value & more\n")


def test_long_html_keeps_block_breaks_and_leaves_out_scripts_and_styles() -> None:
    filler = "<div>" + "word " * (STREAM_AT_LEAST // 5) + "</div>"
    html = (
        "<html><head><title>T</title><script>var x = 1;</script></head><body>"
        "<h1>Order</h1><p>Dear <b>Carol</b>,</p><ul><li>one</li><li>two</li></ul>"
        f"line<br>next<br><br>after a blank line{filler}</body></html>"
    )
    text = html_to_text(html)
    assert text.startswith("Order\nDear Carol,\none\ntwo\nline\nnext\n\nafter a blank line\nword ")
    assert "var x" not in text and "td {}" not in text and "T\n" not in text


def test_short_html_keeps_its_layout() -> None:
    assert html_to_text(_table(2)) == "Report\n\ncell  value & more\ncell  value & more"
