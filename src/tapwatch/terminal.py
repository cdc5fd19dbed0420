"""Printing tables for people: values from the wire are shown as they are.

Rich would read `[...]` in a hostname as markup and `:ab:` in a MAC address as an emoji
code, so both are off; on a file or pipe the table takes its natural width instead of
being cut to 80 columns.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def console(width: int | None = None) -> Console:
    return Console(width=width, emoji=False, markup=False, highlight=False)


def print_table(table: Table) -> None:
    out = console()
    if not out.is_terminal:
        out = console(width=250)  # the table takes only the width it needs
    out.print(table)
