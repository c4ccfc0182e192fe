"""A SOQL subset for the Salesforce double, following the SOQL and SOSL Reference's semantics.

    SELECT f, g FROM Object
      [WHERE condition]                      -- AND, OR, NOT, parentheses
      [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], ...]
      [LIMIT n]

A condition compares a field with a literal: `=`, `!=` (`<>`), `<`, `<=`, `>`, `>=`, `IN (...)`,
`NOT IN (...)`. Literals are 'quoted strings' (backslash escapes), numbers, true/false, null,
date-time literals (2026-03-02T10:00:00Z, ...T10:00:00.000+0000, ...T10:00:00+01:00) and dates
(2026-03-02), never quoted: a quoted value for a datetime field is the documented INVALID_FIELD error,
as is an unquoted one for a text field. A field compared with null is false for every operator
but `= null` and `!= null`. ORDER BY sorts ascending with nulls first unless told otherwise.

`parse` raises `SoqlError(code, message)`; the double answers it as a 400 with that error code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

DATETIME_TYPES = frozenset({"datetime"})
DATE_TYPES = frozenset({"date"})
NUMBER_TYPES = frozenset({"int", "double", "currency", "percent"})
BOOLEAN_TYPES = frozenset({"boolean"})

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^'\\]|\\.)*')
      | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2}))
      | (?P<date>\d{4}-\d{2}-\d{2})
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<op><=|>=|!=|<>|=|<|>)
      | (?P<punct>[(),])
      | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)
KEYWORDS = frozenset(
    {"SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "ORDER", "BY", "ASC", "DESC", "NULLS",
     "FIRST", "LAST", "LIMIT", "NULL", "TRUE", "FALSE"}
)  # fmt: skip


class SoqlError(Exception):
    """A query Salesforce would refuse: `code` is its errorCode (MALFORMED_QUERY, INVALID_FIELD)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # string | datetime | date | number | op | punct | word | keyword
    text: str


@dataclass(frozen=True, slots=True)
class Literal:
    kind: str  # string | datetime | date | number | boolean | null
    value: Any


@dataclass(frozen=True, slots=True)
class OrderKey:
    field: str
    descending: bool
    nulls_last: bool


@dataclass(frozen=True)
class Query:
    """A parsed query: `matches(row)` filters, `sort(rows)` orders, `limit` caps."""

    fields: list[str]
    sobject: str
    matches: Callable[[dict[str, Any]], bool]
    order: list[OrderKey]
    limit: int | None

    def sort(self, rows: list[dict[str, Any]], types: dict[str, str]) -> list[dict[str, Any]]:
        ordered = list(rows)
        for key in reversed(self.order):  # stable sorts, last key first
            present = [row for row in ordered if row.get(key.field) is not None]
            missing = [row for row in ordered if row.get(key.field) is None]
            kind = types.get(key.field, "string")
            present.sort(key=lambda row: _comparable(row[key.field], kind), reverse=key.descending)
            ordered = present + missing if key.nulls_last else missing + present
        return ordered


def tokenize(soql: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    text = soql.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{text[position : position + 20]}'")
        kind = match.lastgroup
        assert kind is not None
        value = match.group(kind)
        if kind == "word" and value.upper() in KEYWORDS:
            tokens.append(Token("keyword", value.upper()))
        else:
            tokens.append(Token(kind, value))
        position = match.end()
    return tokens


def parse(soql: str, describe: Callable[[str], dict[str, dict[str, Any]]]) -> Query:
    """Parse `soql`; `describe(object)` gives the object's fields (name → describe entry)."""
    return _Parser(tokenize(soql), describe).query()


class _Parser:
    def __init__(self, tokens: list[Token], describe: Callable[[str], dict[str, dict[str, Any]]]) -> None:
        self.tokens = tokens
        self.position = 0
        self.describe = describe
        self.fields: dict[str, dict[str, Any]] = {}

    # -- tokens ----------------------------------------------------------------------------------------
    def peek(self, offset: int = 0) -> Token | None:
        index = self.position + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise SoqlError("MALFORMED_QUERY", "unexpected end of query")
        self.position += 1
        return token

    def keyword(self, *words: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "keyword" and token.text in words:
            self.position += 1
            return True
        return False

    def expect_keyword(self, word: str) -> None:
        if not self.keyword(word):
            token = self.peek()
            raise SoqlError("MALFORMED_QUERY", f"expected {word}, found '{token.text if token else 'end'}'")

    def expect_punct(self, char: str) -> None:
        token = self.take()
        if token.kind != "punct" or token.text != char:
            raise SoqlError("MALFORMED_QUERY", f"expected '{char}', found '{token.text}'")

    def field_name(self) -> str:
        token = self.take()
        if token.kind != "word":
            raise SoqlError("MALFORMED_QUERY", f"expected a field name, found '{token.text}'")
        return token.text

    def check_field(self, name: str, sobject: str) -> str:
        if name not in self.fields:
            raise SoqlError("INVALID_FIELD", f"No such column '{name}' on entity '{sobject}'.")
        return name

    # -- grammar ---------------------------------------------------------------------------------------
    def query(self) -> Query:
        self.expect_keyword("SELECT")
        names = [self.field_name()]
        while self.peek() is not None and self.peek() == Token("punct", ","):
            self.take()
            names.append(self.field_name())
        self.expect_keyword("FROM")
        sobject = self.field_name()
        self.fields = self.describe(sobject)
        for name in names:
            self.check_field(name, sobject)
        condition: Callable[[dict[str, Any]], bool] = lambda row: True  # noqa: E731
        if self.keyword("WHERE"):
            condition = self.disjunction(sobject)
        order: list[OrderKey] = []
        if self.keyword("ORDER"):
            self.expect_keyword("BY")
            order.append(self.order_key(sobject))
            while self.peek() == Token("punct", ","):
                self.take()
                order.append(self.order_key(sobject))
        limit = None
        if self.keyword("LIMIT"):
            token = self.take()
            if token.kind != "number" or not token.text.isdigit():
                raise SoqlError("MALFORMED_QUERY", f"LIMIT needs a whole number, found '{token.text}'")
            limit = int(token.text)
        if self.peek() is not None:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{self.take().text}'")
        return Query(names, sobject, condition, order, limit)

    def order_key(self, sobject: str) -> OrderKey:
        name = self.check_field(self.field_name(), sobject)
        descending = False
        if self.keyword("DESC"):
            descending = True
        else:
            self.keyword("ASC")
        nulls_last = descending  # Salesforce: ASC puts nulls first, DESC puts them last
        if self.keyword("NULLS"):
            if self.keyword("LAST"):
                nulls_last = True
            else:
                self.expect_keyword("FIRST")
                nulls_last = False
        return OrderKey(name, descending, nulls_last)

    def disjunction(self, sobject: str) -> Callable[[dict[str, Any]], bool]:
        parts = [self.conjunction(sobject)]
        while self.keyword("OR"):
            parts.append(self.conjunction(sobject))
        return parts[0] if len(parts) == 1 else (lambda row: any(part(row) for part in parts))

    def conjunction(self, sobject: str) -> Callable[[dict[str, Any]], bool]:
        parts = [self.factor(sobject)]
        while self.keyword("AND"):
            parts.append(self.factor(sobject))
        return parts[0] if len(parts) == 1 else (lambda row: all(part(row) for part in parts))

    def factor(self, sobject: str) -> Callable[[dict[str, Any]], bool]:
        if self.keyword("NOT"):
            inner = self.factor(sobject)
            return lambda row: not inner(row)
        if self.peek() == Token("punct", "("):
            self.take()
            inner = self.disjunction(sobject)
            self.expect_punct(")")
            return inner
        name = self.check_field(self.field_name(), sobject)
        kind = str(self.fields[name].get("type", "string"))
        negated = False
        if self.keyword("NOT"):
            negated = True
            if self.peek() != Token("keyword", "IN"):
                raise SoqlError("MALFORMED_QUERY", "expected IN after NOT")
        if self.keyword("IN"):
            self.expect_punct("(")
            values = [self.literal(name, kind)]
            while self.peek() == Token("punct", ","):
                self.take()
                values.append(self.literal(name, kind))
            self.expect_punct(")")
            wanted = [_comparable(value.value, kind) for value in values if value.kind != "null"]
            has_null = any(value.kind == "null" for value in values)

            def member(row: dict[str, Any]) -> bool:
                stored = row.get(name)
                inside = has_null if stored is None else _comparable(stored, kind) in wanted
                return not inside if negated else inside

            return member
        token = self.take()
        if token.kind != "op":
            raise SoqlError("MALFORMED_QUERY", f"expected an operator after {name}, found '{token.text}'")
        operator = "!=" if token.text == "<>" else token.text
        literal = self.literal(name, kind)
        return _comparison(name, kind, operator, literal)

    def literal(self, name: str, kind: str) -> Literal:
        token = self.take()
        if token.kind == "keyword" and token.text == "NULL":
            return Literal("null", None)
        if token.kind == "keyword" and token.text in {"TRUE", "FALSE"}:
            return Literal("boolean", token.text == "TRUE")
        if kind in DATETIME_TYPES:
            if token.kind != "datetime":
                raise SoqlError(
                    "INVALID_FIELD",
                    f"value of filter criterion for field '{name}' must be of type dateTime and should "
                    "not be enclosed in quotes",
                )
            return Literal("datetime", parse_datetime(token.text))
        if kind in DATE_TYPES:
            if token.kind != "date":
                raise SoqlError(
                    "INVALID_FIELD",
                    f"value of filter criterion for field '{name}' must be of type date and should not "
                    "be enclosed in quotes",
                )
            return Literal("date", date.fromisoformat(token.text))
        if kind in NUMBER_TYPES:
            if token.kind != "number":
                raise SoqlError(
                    "INVALID_FIELD", f"value of filter criterion for field '{name}' must be a number"
                )
            return Literal("number", float(token.text))
        if token.kind != "string":
            raise SoqlError(
                "INVALID_FIELD",
                f"value of filter criterion for field '{name}' must be of type {kind} and should be "
                "enclosed in quotes",
            )
        return Literal("string", re.sub(r"\\(.)", r"\1", token.text[1:-1]))


def _comparison(name: str, kind: str, operator: str, literal: Literal) -> Callable[[dict[str, Any]], bool]:
    if literal.kind == "null":
        if operator == "=":
            return lambda row: row.get(name) is None
        if operator == "!=":
            return lambda row: row.get(name) is not None
        return lambda row: False
    wanted = _comparable(literal.value, kind)
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    test = compare[operator]

    def check(row: dict[str, Any]) -> bool:
        stored = row.get(name)
        if stored is None:
            return operator == "!="  # null != 'x' is true in SOQL
        return test(_comparable(stored, kind), wanted)

    return check


def parse_datetime(text: str) -> datetime:
    """A SOQL or REST date-time (…Z, …+0000, …+01:00) as an aware UTC datetime."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value.astimezone(UTC)


def format_datetime(value: datetime) -> str:
    """How the REST API writes a date-time: 2026-03-02T10:00:00.000+0000."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}+0000"


def _comparable(value: Any, kind: str) -> Any:
    """A stored or literal value as what it compares as: datetimes by instant, text case-insensitively."""
    if kind in DATETIME_TYPES:
        return value if isinstance(value, datetime) else parse_datetime(str(value))
    if kind in DATE_TYPES:
        return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
    if kind in NUMBER_TYPES:
        return float(value)
    if kind in BOOLEAN_TYPES:
        return bool(value)
    if kind in {"id", "reference"}:
        return str(value)  # Ids compare exactly (their case is meaningful)
    return str(value).lower()  # SOQL text comparisons ignore case
