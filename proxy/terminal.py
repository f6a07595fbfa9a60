"""Text tables for the terminal."""

from __future__ import annotations


def aligned_table(
    header: list[str], rows: list[list[str]], total: list[str], text_columns: int
) -> list[str]:
    """Lines of a table: text columns to the left, numbers to the right, a rule under the
    header and above the totals."""
    widths = [max(len(row[i]) for row in (header, *rows, total)) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        cells_aligned = [
            cell.ljust(width) if i < text_columns else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(cells_aligned).rstrip()

    rule = "  ".join("-" * width for width in widths)
    body = [*(line(row) for row in rows), rule] if rows else []
    return [line(header), rule, *body, line(total)]
