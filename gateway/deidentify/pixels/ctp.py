"""Region rules in CTP's DicomPixelAnonymizer script format, so a site reuses what it has.

A script is free text with blocks of the form

    { Manufacturer.containsIgnoreCase("GE MEDICAL") * Rows.equals("512") }
    (0,0,512,25) (0,480,200,32)

a condition over header values, then the rectangles (x, y, width, height in pixels) to black
out where it holds. Conditions: `Keyword.method("value")` or `[gggg,eeee].method("value")`
with the methods equals, contains, startsWith, endsWith (each also ...IgnoreCase) and matches
(a regular expression); `!` negates, `*` is AND, `+` is OR (AND binds tighter), parentheses
group. Text outside blocks (headings, notes) is ignored. Anything else in a block is an error
naming the line: a rule the gateway cannot read must not be dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.datadict import keyword_dict
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

_TOKEN = re.compile(
    r'\s*(?:(?P<string>"[^"]*")|(?P<tag>\[[0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\])'
    r"|(?P<word>[A-Za-z][A-Za-z0-9]*)|(?P<op>[!*+().]))"
)
_RECTANGLE = re.compile(r"\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\)")
Predicate = Callable[[Dataset], bool]


class RuleError(ValueError):
    """A script that cannot be read; the message names the line (scripts hold no PHI)."""


@dataclass(frozen=True)
class Region:
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class Rule:
    condition: str
    line: int
    regions: tuple[Region, ...]
    matches: Predicate


def _compare(method: str, wanted: str) -> Callable[[str], bool]:
    base, ignore_case = method.removesuffix("IgnoreCase"), method.endswith("IgnoreCase")
    if base == "matches" and not ignore_case:
        pattern = re.compile(wanted)
        return lambda value: pattern.fullmatch(value) is not None
    ops: dict[str, Callable[[str, str], bool]] = {
        "equals": lambda v, w: v == w,
        "contains": lambda v, w: w in v,
        "startsWith": lambda v, w: v.startswith(w),
        "endsWith": lambda v, w: v.endswith(w),
    }
    if base not in ops:
        raise RuleError(f"unknown method {method!r}")
    op = ops[base]
    if ignore_case:
        folded = wanted.casefold()
        return lambda value: op(value.casefold(), folded)
    return lambda value: op(value, wanted)


def _value(ds: Dataset, tag: int) -> str:
    """The element's value as CTP sees it: text, multi-values joined by backslashes; absent
    or binary elements are the empty string."""
    elem = ds.get(tag)
    if elem is None or elem.value is None or isinstance(elem.value, bytes):
        return ""
    value = elem.value
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        text = text.rstrip()
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None:
                raise RuleError(f"unexpected text {text[position : position + 20]!r}")
            kind = match.lastgroup or ""
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
        self.index = 0

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _take(self, kind: str, value: str | None = None) -> str:
        token = self._peek()
        if token is None or token[0] != kind or (value is not None and token[1] != value):
            raise RuleError(f"expected {value or kind}, found {token[1] if token else 'the end'}")
        self.index += 1
        return token[1]

    def parse(self) -> Predicate:
        predicate = self._or()
        if self._peek() is not None:
            raise RuleError(f"unexpected {self._peek()}")
        return predicate

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._peek() == ("op", "+"):
            self.index += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else lambda ds: any(p(ds) for p in parts)

    def _and(self) -> Predicate:
        parts = [self._not()]
        while self._peek() == ("op", "*"):
            self.index += 1
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else lambda ds: all(p(ds) for p in parts)

    def _not(self) -> Predicate:
        if self._peek() == ("op", "!"):
            self.index += 1
            inner = self._not()
            return lambda ds: not inner(ds)
        if self._peek() == ("op", "("):
            self.index += 1
            inner = self._or()
            self._take("op", ")")
            return inner
        return self._test()

    def _test(self) -> Predicate:
        token = self._peek()
        if token is not None and token[0] == "tag":
            self.index += 1
            group, element = token[1].strip("[]").split(",")
            tag = (int(group, 16) << 16) | int(element, 16)
        else:
            keyword = self._take("word")
            if keyword not in keyword_dict:
                raise RuleError(f"unknown DICOM keyword {keyword!r}")
            tag = keyword_dict[keyword]
        self._take("op", ".")
        method = self._take("word")
        self._take("op", "(")
        wanted = self._take("string")[1:-1]
        self._take("op", ")")
        compare = _compare(method, wanted)
        return lambda ds: compare(_value(ds, tag))


def parse_script(text: str) -> tuple[Rule, ...]:
    """Every `{ condition } (x,y,w,h)...` block of a DicomPixelAnonymizer script."""
    rules: list[Rule] = []
    for match in re.finditer(r"\{([^{}]*)\}([^{]*)", text):
        line = text.count("\n", 0, match.start()) + 1
        condition = " ".join(match.group(1).split())
        tail = match.group(2)
        regions, end = [], 0
        for rect in _RECTANGLE.finditer(tail):
            if tail[end : rect.start()].strip():
                break  # the block's rectangles follow it directly; later text is a heading
            regions.append(Region(*(int(v) for v in rect.groups())))
            end = rect.end()
        if not regions:
            raise RuleError(f"line {line}: a condition without rectangles")
        try:
            predicate = _Parser(condition).parse()
        except (RuleError, re.error) as exc:
            raise RuleError(f"line {line}: {exc}") from None
        rules.append(Rule(condition, line, tuple(regions), predicate))
    return tuple(rules)


def regions_for(rules: tuple[Rule, ...], ds: Dataset) -> list[Region]:
    """The rectangles of every rule whose condition holds for the (original) header."""
    return [region for rule in rules if rule.matches(ds) for region in rule.regions]
