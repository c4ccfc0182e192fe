"""Showing untrusted text safely: in web pages, CLI tables and CSV exports.

Enquiry text (subjects, names, file names, notes) comes from strangers. Beyond HTML escaping, three
things can mislead or harm whoever looks at it:

- **Invisible and bidirectional control characters** (U+202E RIGHT-TO-LEFT OVERRIDE, U+2066..2069
  isolates, zero-width spaces, C0/C1 controls such as ESC): a subject can display reversed or hidden
  text, and in a terminal ESC sequences can set the title or clear the screen. `visible()` replaces
  each with a visible `<U+202E>`; newlines and tabs stay. The zero-width joiners U+200C/U+200D stay
  too: Persian, Indic scripts and emoji sequences need them and they cannot reorder text.
- **Rich markup** in a CLI table (`[/x]` crashes Rich): `SafeTable` turns every string cell into a
  `rich.text.Text`, which Rich never parses as markup; `markup_safe()` escapes text put into a
  markup string.
- **Spreadsheet formulas** in a CSV (`=HYPERLINK(...)`): `csv_cell()` prefixes a cell that starts with
  `=`, `+`, `-`, `@`, a tab or a carriage return with a single quote (OWASP's rule).

The stored records never change: these apply only on the way out.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from markupsafe import Markup
from rich.markup import escape as rich_escape
from rich.table import Table
from rich.text import Text

KEPT_CONTROLS = frozenset("\n\t")
# Joiners shape scripts (Persian, Devanagari) and emoji; they cannot reorder or hide text.
KEPT_FORMAT = frozenset("\u200c\u200d")
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _hidden(character: str) -> bool:
    if character in KEPT_CONTROLS or character in KEPT_FORMAT:
        return False
    return unicodedata.category(character) in HIDDEN_CATEGORIES


def visible(text: str) -> str:
    """`text` with every invisible or control character shown as `<U+XXXX>` (newline and tab kept).

    `"\\u202eevil"` → `"<U+202E>evil"`, `"\\x1b]0;pwned\\x07"` → `"<U+001B>]0;pwned<U+0007>"`.
    """
    if text.isprintable():  # the common case, checked in C
        return text
    text = text.replace("\r\n", "\n")
    return "".join(f"<U+{ord(ch):04X}>" if _hidden(ch) else ch for ch in text)


def jinja_finalize(value: Any) -> Any:
    """Jinja2's `finalize`: every `{{ ... }}` string output goes through `visible()` before escaping.

    Markup (already-safe HTML the templates build themselves) passes as it is.
    """
    if isinstance(value, str) and not isinstance(value, Markup):
        return visible(value)
    return value


def markup_safe(value: object) -> str:
    """Text to put inside a Rich markup string: controls made visible, markup escaped."""
    return rich_escape(visible(str(value)))


def cell(value: object) -> Text:
    """A Rich table cell that shows `value` literally (no markup, no control characters)."""
    if isinstance(value, Text):
        return Text(visible(value.plain), style=value.style)
    return Text(visible("" if value is None else str(value)))


class SafeTable(Table):
    """A Rich `Table` whose string cells are shown literally: stored data never becomes markup."""

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        cells = (cell(value) if isinstance(value, str | Text) else value for value in renderables)
        super().add_row(*cells, **kwargs)


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet will not run: controls made visible, formula starts quoted (OWASP).

    Numbers and other non-text values pass as they are.
    """
    if not isinstance(value, str):
        return value
    text = visible(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text
