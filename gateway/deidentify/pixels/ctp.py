"""Region rules in CTP's DicomPixelAnonymizer script format, so a site reuses what it has.

A script is free text with blocks of the form

    { Manufacturer.containsIgnoreCase("GE MEDICAL") * Rows.equals("512") }
    (0,0,512,25) (0,480,200,32)

a condition over header values, then the rectangles (x, y, width, height in pixels) to black
out where it holds. Conditions: `Keyword.method("value")` or `[gggg,eeee].method("value")`
with the methods equals, contains, startsWith, endsWith (each also ...IgnoreCase) and matches
(a regular expression), or `true` / `false`; `!` negates, `*` is AND, `+` is OR (AND binds
tighter), parentheses group, `//` starts a comment to the end of the line. A condition may run
over several lines.

The script is read strictly: a rule the gateway reads otherwise than the site meant is a rule
dropped, and burned-in names leave the hospital. Whatever is not consumed as below is a
`RuleError` reading `file:line:column: what` (columns count characters, a tab is one; line
ends may be LF, CRLF or CR).

- **A rule** is `{`, a condition, `}`, then at least one rectangle. A `{` with no `}` before
  the next `{` or the end of the file is an error at that `{`; so is a brace inside a string or
  a comment (CTP ends a rule at the first `}` wherever it stands), a string not closed on its
  line, and a condition with no rectangle after it (CTP would blank nothing for it and, taking
  the first matching rule only, stop looking: an exemption nobody writes on purpose).
- **Rectangles** are `(x,y,width,height)`: ASCII digits (not `O` for `0`, not look-alike
  digits from other scripts), spaces and tabs inside, one line each, width and height at least
  1, within 65535 pixels (DICOM Rows and Columns are 16-bit). They follow the condition
  directly, separated by white space or nothing (`(0,0,9,9)(0,20,9,9)`), over as many lines as
  they like. A comma between rectangles, or any other text after one on its line, is an error.
- **Free text** - before the first rule and on the lines after a rule's rectangles, up to the
  next `{` - is a comment (headings, notes, CTP's own header), with two exceptions that would
  hide a rule fragment: a `}` (a rule whose `{` is missing), and a parenthesis that reads as a
  rectangle - up to its `)` or the end of its line, a digit and a comma, and either four
  comma-separated parts or nothing but digits, commas, signs, spaces and the letters O, o, l, I
  (`(0,O,512,25)`, `(0,0,512`, `(512, 1024)`). CTP reads every parenthesis after a rule as a
  rectangle of that rule, a heading's included: a rectangle placed after a heading, or meant
  for a rule whose braces are missing, must not be read by one tool and ignored by the other.
  Prose in parentheses, `(new software, v2)`, stays a comment. So do numbers, unless four of
  them stand in a row apart only by spaces or a comma, semicolon, colon, `x` or `*` (full-width
  forms too): a rectangle written in other brackets or none (`[0,440,640,40]`,
  `Bottom: 0 440 640x40`) is an error, not a note.

(Over 400 lines on purpose: one grammar - CTP's DicomPixelAnonymizer scripts - read,
checked and evaluated in one place, so the rules and their error messages cannot drift apart.)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.datadict import keyword_dict
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from gateway.errors import RuleError

_SPACE = " \t\n\f\v"  # Java's Character.isWhitespace in ASCII; \r is gone (line ends unified)
_TOKEN = re.compile(
    r"(?P<tag>\[[0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\])|(?P<word>[A-Za-z][A-Za-z0-9]*)|(?P<op>[!*+().])"
)
_NUMBER = re.compile(r"[0-9]+")
_LARGEST = 65535  # Rows and Columns are US (PS3.3 C.7.6.3): no image is wider or taller
_FIELDS = ("x", "y", "width", "height")
Predicate = Callable[[Dataset], bool]
Token = tuple[str, str, int]  # kind, text, offset in the script
#: Characters typed for a rectangle's digits, and what they most likely are.
_HINTS = {
    "O": "a letter O for a zero?",
    "o": "a letter o for a zero?",
    "l": "a letter l for a one?",
    "I": "a letter I for a one?",
    "-": "rectangles lie inside the image: no negative numbers",
}


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


@dataclass(frozen=True)
class _Script:
    """One script's text (line ends made LF) and name, so every error can point into it."""

    text: str
    name: str

    def char(self, offset: int) -> str:
        return self.text[offset] if offset < len(self.text) else ""

    def skip(self, offset: int, blank: str = _SPACE) -> int:
        while offset < len(self.text) and self.text[offset] in blank:
            offset += 1
        return offset

    def line_end(self, offset: int) -> int:
        end = self.text.find("\n", offset)
        return len(self.text) if end == -1 else end

    def where(self, offset: int) -> tuple[int, int]:
        """Line and column (both from 1, a column per character) of `offset`."""
        line = self.text.count("\n", 0, offset) + 1
        return line, offset - (self.text.rfind("\n", 0, offset) + 1) + 1

    def error(self, offset: int, message: str) -> RuleError:
        return RuleError(self.name, *self.where(offset), message)

    def found(self, offset: int, hinted: bool = False) -> str:
        """What stands at `offset`, named so that a look-alike shows what it is (`hinted`:
        where a number was due, with what the character was most likely meant to be)."""
        ch = self.char(offset)
        if not ch or ch == "\n":
            return "the end of the file" if not ch else "the end of the line"
        if hinted and ch in _HINTS:
            return f"{ch!r} ({_HINTS[ch]})"
        if not ch.isascii() or not ch.isprintable():
            other = ", a digit, but not an ASCII one" if ch.isdigit() else ""
            return f"{ch!r} (U+{ord(ch):04X}{other})"
        return repr(ch)


_METHODS: dict[str, Callable[[str, str], bool]] = {
    "equals": lambda v, w: v == w,
    "contains": lambda v, w: w in v,
    "startsWith": lambda v, w: v.startswith(w),
    "endsWith": lambda v, w: v.endswith(w),
}


def _compare(method: str, wanted: str) -> Callable[[str], bool]:
    """CTP's String methods; `method` is known (`_METHODS`), `matches` is a full match."""
    if method == "matches":
        pattern = re.compile(wanted)
        return lambda value: pattern.fullmatch(value) is not None
    base, ignore_case = method.removesuffix("IgnoreCase"), method.endswith("IgnoreCase")
    op = _METHODS[base]
    if ignore_case:
        folded = wanted.casefold()
        return lambda value: op(value.casefold(), folded)
    return lambda value: op(value, wanted)


def _known_method(method: str) -> bool:
    return method == "matches" or method.removesuffix("IgnoreCase") in _METHODS


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


def _no_brace(script: _Script, start: int, end: int, inside: str) -> None:
    """Rules are found by their braces alone, as CTP finds them (it ends a rule at the first
    `}` wherever it stands): a brace in a string or a comment would split the rule there."""
    for offset in range(start, end):
        if script.text[offset] in "{}":
            raise script.error(offset, f"a brace inside {inside}: braces only open and close rules")


def _skip_blank(script: _Script, offset: int) -> int:
    """Past white space and `//` comments, which CTP's matcher skips inside a condition."""
    offset = script.skip(offset)
    while script.text.startswith("//", offset):
        end = script.line_end(offset)
        _no_brace(script, offset, end, "a comment")
        offset = script.skip(end)
    return offset


def _string(script: _Script, start: int) -> Token:
    end = script.text.find('"', start + 1, script.line_end(start))
    if end == -1:
        raise script.error(start, "string not closed on its line")
    _no_brace(script, start, end, "a string")
    return "string", script.text[start : end + 1], start


def _unexpected(script: _Script, start: int, offset: int) -> RuleError:
    """The error for what a condition cannot hold: most often the rule was not closed (its
    rectangles or the next rule come next), which is said at the rule's `{`."""
    close = script.text.find("}", start)
    following = script.text.find("{", start + 1)
    if close == -1 or -1 < following < close:
        what = "the end of the file"
        if following != -1:
            what = "the next '{{' at {}:{}".format(*script.where(following))
        return script.error(start, f"rule not closed: no '}}' before {what}")
    quote = ' (values are quoted: "512")' if script.char(offset).isdigit() else ""
    return script.error(offset, f"unexpected {script.found(offset)} in a condition{quote}")


def _condition(script: _Script, start: int) -> list[Token]:
    """The tokens of the condition whose `{` is at `start`, ending with its `}`."""
    tokens: list[Token] = []
    offset = start + 1
    while (ch := script.char(offset := _skip_blank(script, offset))) != "}":
        if ch == '"':
            token = _string(script, offset)
        elif match := _TOKEN.match(script.text, offset):
            token = match.lastgroup or "", match.group(), offset
        else:
            raise _unexpected(script, start, offset)
        tokens.append(token)
        offset += len(token[1])
    return [*tokens, ("end", "}", offset)]


class _Parser:
    """A condition's grammar over its tokens: or := and (+ and)*, and := not (* not)*,
    not := ! not | ( or ) | test, test := true | false | name . method ( "value" )."""

    def __init__(self, script: _Script, tokens: list[Token]) -> None:
        self.script, self.tokens, self.index = script, tokens, 0

    def _peek(self) -> Token:
        return self.tokens[self.index]  # never past the closing "end"

    def _error(self, token: Token, message: str) -> RuleError:
        return self.script.error(token[2], message)

    def _take(self, kind: str, text: str | None, what: str) -> Token:
        token = self._peek()
        if token[0] != kind or (text is not None and token[1] != text):
            found = "the rule's '}'" if token[0] == "end" else repr(token[1])
            raise self._error(token, f"expected {what}, found {found}")
        self.index += 1
        return token

    def _skip_op(self, op: str) -> bool:
        if self._peek()[:2] == ("op", op):
            self.index += 1
            return True
        return False

    def parse(self) -> Predicate:
        predicate = self._or()
        self._take("end", "}", "'*', '+' or the rule's '}'")
        return predicate

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._skip_op("+"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else lambda ds: any(p(ds) for p in parts)

    def _and(self) -> Predicate:
        parts = [self._not()]
        while self._skip_op("*"):
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else lambda ds: all(p(ds) for p in parts)

    def _not(self) -> Predicate:
        if self._skip_op("!"):
            inner = self._not()
            return lambda ds: not inner(ds)
        opening = self._peek()
        if self._skip_op("("):
            inner = self._or()
            line, column = self.script.where(opening[2])
            self._take("op", ")", f"')' to close the '(' at {line}:{column}")
            return inner
        return self._test()

    def _test(self) -> Predicate:
        token = self._peek()
        if token[:2] in (("word", "true"), ("word", "false")):
            self.index += 1
            constant = token[1] == "true"
            return lambda ds: constant
        tag = self._tag()
        self._take("op", ".", "'.' and a method")
        method = self._take("word", None, "a method (equals, contains, ...)")
        if not _known_method(method[1]):
            raise self._error(method, f"unknown method {method[1]!r}")
        self._take("op", "(", "'('")
        wanted = self._take("string", None, 'a quoted "value"')
        self._take("op", ")", "')'")
        try:
            compare = _compare(method[1], wanted[1][1:-1])
        except re.error as exc:
            raise self._error(wanted, f"not a regular expression: {exc.msg}") from None
        return lambda ds: compare(_value(ds, tag))

    def _tag(self) -> int:
        token = self._take_name()
        if token[0] == "tag":
            group, element = token[1].strip("[]").split(",")
            return (int(group, 16) << 16) | int(element, 16)
        if token[1] not in keyword_dict:
            raise self._error(token, f"unknown DICOM keyword {token[1]!r}")
        return keyword_dict[token[1]]

    def _take_name(self) -> Token:
        if self._peek()[0] == "tag":
            return self._take("tag", None, "[gggg,eeee]")
        return self._take("word", None, "a keyword, [gggg,eeee], '(' or '!'")


def _rectangle(script: _Script, start: int) -> tuple[Region, int]:
    """The `(x,y,width,height)` at `start`, on one line, and the offset after its `)`."""
    values: list[int] = []
    offset = start + 1
    for index, field in enumerate(_FIELDS):
        offset = script.skip(offset, " \t")
        match = _NUMBER.match(script.text, offset)
        if match is None:
            found = script.found(offset, hinted=True)
            raise script.error(offset, f"expected the {field}, a whole number, found {found}")
        values.append(_size(script, match, field))
        offset = script.skip(match.end(), " \t")
        closer = "," if index < len(_FIELDS) - 1 else ")"
        if script.char(offset) != closer:
            found = script.found(offset, hinted=True)
            raise script.error(offset, f"expected {closer!r} after the {field}, found {found}")
        offset += 1
    x, y, width, height = values
    if x + width > _LARGEST or y + height > _LARGEST:
        raise script.error(start, f"the rectangle reaches past {_LARGEST} pixels, beyond any image")
    return Region(x, y, width, height), offset


def _size(script: _Script, match: re.Match[str], field: str) -> int:
    """One number of a rectangle: a width or height of 0 masks nothing, and no number
    past 65535 fits an image (kept short: a thousand digits are not echoed)."""
    if len(match.group()) > len(str(_LARGEST)) or int(match.group()) > _LARGEST:
        raise script.error(
            match.start(), f"the {field} is past {_LARGEST} pixels, beyond any image"
        )
    value = int(match.group())
    if value == 0 and field in ("width", "height"):
        raise script.error(match.start(), f"the {field} is 0: the rectangle masks nothing")
    return value


def _rectangles(script: _Script, start: int) -> tuple[list[Region], int]:
    """The rectangles after the `}` at `start - 1` (one at least), and where the text after
    them begins."""
    offset = script.skip(start)
    if script.char(offset) != "(":
        found = script.found(offset)
        raise script.error(offset, f"expected a rectangle (x,y,width,height), found {found}")
    regions: list[Region] = []
    while script.char(offset) == "(":
        region, offset = _rectangle(script, offset)
        regions.append(region)
        offset = _after_rectangle(script, offset)
    return regions, offset


def _after_rectangle(script: _Script, offset: int) -> int:
    """Where the next rectangle starts, or the free text after a rule's rectangles: the rest
    of a rectangle's line holds only more rectangles (or the next rule)."""
    offset = script.skip(offset, " \t")
    ch = script.char(offset)
    if ch == "\n":
        following = script.skip(offset)
        return following if script.char(following) == "(" else offset
    if ch in ("(", "{", ""):
        return offset
    if ch == ",":
        raise script.error(offset, "a comma after a rectangle: rectangles are separated by spaces")
    found = script.found(offset)
    raise script.error(offset, f"unexpected {found} after a rectangle: notes go on their own line")


_FRAGMENT = re.compile(r"[(}]")
_TYPED_NUMBERS = re.compile(r"[0-9OolI+\- \t,]*")
#: Four numbers in a row among notes, apart only by spaces or a comma, semicolon, colon, `x`,
#: `*` (or their full-width forms, and the multiplication sign): a rectangle in another
#: bracket or none (`[0,440,640,40]`, `<0 440 640 40>`, `Bottom: 0,440,640x40`, the same in
#: full-width brackets and commas). Dates, times and versions (hyphens, dots) are not.
_FOUR_NUMBERS = re.compile(
    r"\d+(?:[ \t]*[,;:\uff0c\uff1b\uff1a\u3001xX\u00d7*][ \t]*\d+|[ \t]+\d+){3}"
)


def _free_text(script: _Script, start: int, previous: Rule | None) -> int:
    """The offset of the next `{` (or the end): the text up to it is a comment, once it is
    known to hold no rule fragment - a `}`, or a parenthesis shaped like a rectangle."""
    end = script.text.find("{", start)
    end = len(script.text) if end == -1 else end
    for match in _FRAGMENT.finditer(script.text, start, end):
        if match.group() == "}":
            raise script.error(match.start(), "a '}' outside a rule: is the rule's '{' missing?")
        if _rectangle_like(script, match.start()):
            raise script.error(match.start(), _stray(previous))
    numbers = _FOUR_NUMBERS.search(script.text, start, end)
    if numbers is not None:
        raise script.error(
            numbers.start(),
            f"four numbers that read as a rectangle: {_stray(previous)} (x,y,width,height)",
        )
    return end


def _rectangle_like(script: _Script, offset: int) -> bool:
    """Whether the `(` at `offset` opens what reads as a rectangle, up to its `)` (or the end
    of the line): a digit and a comma, and either four comma-separated parts (what CTP takes
    for a rectangle) or nothing but numbers typed somehow (`(0,O,512`, `(512, 1024)`)."""
    line_end = script.line_end(offset)
    close = script.text.find(")", offset, line_end)
    inside = script.text[offset + 1 : line_end if close == -1 else close]
    if "," not in inside or not any(ch.isdigit() for ch in inside):
        return False
    return inside.count(",") == 3 or _TYPED_NUMBERS.fullmatch(inside) is not None


def _stray(previous: Rule | None) -> str:
    if previous is None:
        return "a rectangle before the first rule: rectangles follow their rule's condition"
    return (
        f"a rectangle among notes: CTP would add it to the rule of line {previous.line}; "
        "a rule's rectangles follow its condition, separated by spaces"
    )


def _rule(script: _Script, start: int) -> tuple[Rule, int]:
    """The rule whose `{` is at `start`, and where the text after its rectangles begins."""
    tokens = _condition(script, start)
    predicate = _Parser(script, tokens).parse()
    close = tokens[-1][2]
    regions, end = _rectangles(script, close + 1)
    condition = " ".join(script.text[start + 1 : close].split())
    return Rule(condition, script.where(start)[0], tuple(regions), predicate), end


def parse_script(text: str, name: str = "<script>") -> tuple[Rule, ...]:
    """Every rule of a DicomPixelAnonymizer script; RuleError at the first text not read.
    `name` (the file) prefixes every error."""
    script = _Script(text.replace("\r\n", "\n").replace("\r", "\n"), name)
    rules: list[Rule] = []
    offset = _free_text(script, 0, None)
    while offset < len(script.text):
        rule, offset = _rule(script, offset)
        rules.append(rule)
        offset = _free_text(script, offset, rule)
    return tuple(rules)


def regions_for(rules: tuple[Rule, ...], ds: Dataset) -> list[Region]:
    """The rectangles of every rule whose condition holds for the (original) header."""
    return [region for rule in rules if rule.matches(ds) for region in rule.regions]
