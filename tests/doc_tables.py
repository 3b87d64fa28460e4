"""Reading Markdown tables of docs/ for the tests that check them against their committed JSON."""

from __future__ import annotations


def table_rows(text: str, header: str, strip: str = "`") -> dict[str, list[str]]:
    """``{first cell: other cells}`` of the Markdown table whose header row starts with ``header``.

    Args:
        text: the Markdown document.
        header: the start of the table's header row.
        strip: characters stripped from each first cell (the row's name).
    """
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip(strip)] = cells[1:]
    return rows


def signed_percent(cell: str) -> float:
    """A cell that is exactly one signed percentage, ``+12.3%`` or ``**-1.1%**``, as a fraction (0.123)."""
    import re

    m = re.fullmatch(r"\**([+-]\d+(?:\.\d+)?)%\**", cell)
    assert m, cell
    return float(m.group(1)) / 100
