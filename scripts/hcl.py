"""A small reader of Terraform's native syntax (HCL) for the schema check.

It reads what `terraform fmt` accepts and keeps what a schema check needs: for every
block its type, labels, line, and body; for every attribute its name, line, and
whether its value is a plain string literal (then the literal). Expressions are not
evaluated: an attribute's value is kept as the raw source text.

    body  = [Attribute | Block]
    Attribute(name, line, raw, literal)   # literal: str for "...", else None
    Block(type, labels, line, body)

Used by scripts/tfschema.py; standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass
class Attribute:
    name: str
    line: int
    raw: str
    literal: str | None


@dataclass
class Block:
    type: str
    labels: list[str]
    line: int
    body: list = field(default_factory=list)

    def attributes(self) -> list[Attribute]:
        return [x for x in self.body if isinstance(x, Attribute)]

    def blocks(self) -> list["Block"]:
        return [x for x in self.body if isinstance(x, Block)]

    def attribute(self, name: str) -> Attribute | None:
        return next((a for a in self.attributes() if a.name == name), None)


class ParseError(Exception):
    pass


# Token kinds: ident, string (raw text with quotes), heredoc, number, punct, newline.
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_HEREDOC = re.compile(r"<<(-?)([A-Za-z_][A-Za-z0-9_]*)\n")


def _string_end(src: str, i: int) -> int:
    """Index just past the closing quote of the string starting at src[i] == '"'."""
    j = i + 1
    while j < len(src):
        c = src[j]
        if c == "\\":
            j += 2
            continue
        if c == '"':
            return j + 1
        if src.startswith("${", j) or src.startswith("%{", j):
            j = _template_end(src, j + 2)
            continue
        if c == "\n":
            break
        j += 1
    raise ParseError(f"line {src.count(chr(10), 0, i) + 1}: unterminated string")


def _template_end(src: str, j: int) -> int:
    """Index just past the `}` closing a `${`/`%{` whose body starts at src[j]."""
    depth = 1
    while j < len(src):
        c = src[j]
        if c == '"':
            j = _string_end(src, j)
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    raise ParseError("unterminated template interpolation")


def tokenize(src: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    i, line = 0, 1
    while i < len(src):
        c = src[i]
        if c == "\n":
            tokens.append(("newline", "\n", line))
            line += 1
            i += 1
        elif c in " \t\r":
            i += 1
        elif c == "#" or src.startswith("//", i):
            while i < len(src) and src[i] != "\n":
                i += 1
        elif src.startswith("/*", i):
            end = src.find("*/", i + 2)
            if end < 0:
                raise ParseError(f"line {line}: unterminated comment")
            line += src.count("\n", i, end)
            i = end + 2
        elif c == '"':
            end = _string_end(src, i)
            tokens.append(("string", src[i:end], line))
            i = end
        elif m := _HEREDOC.match(src, i):
            marker = m.group(2)
            body_start = m.end()
            end = re.compile(rf"^[ \t]*{marker}[ \t]*$", re.M).search(src, body_start)
            if not end:
                raise ParseError(f"line {line}: unterminated heredoc {marker}")
            tokens.append(("heredoc", src[i:end.end()], line))
            line += src.count("\n", i, end.end())
            i = end.end()
        elif m := _IDENT.match(src, i):
            tokens.append(("ident", m.group(0), line))
            i = m.end()
        elif m := _NUMBER.match(src, i):
            tokens.append(("number", m.group(0), line))
            i = m.end()
        else:
            two = src[i:i + 2]
            if two in ("==", "!=", "<=", ">=", "&&", "||", "=>", "..."):
                n = 3 if src.startswith("...", i) else 2
                tokens.append(("punct", src[i:i + n], line))
                i += n
            else:
                tokens.append(("punct", c, line))
                i += 1
    return tokens


_OPEN = {"(": ")", "[": "]", "{": "}"}


def _unquote(s: str) -> str | None:
    """The value of a string literal without interpolation, else None."""
    inner = s[1:-1]
    if "${" in inner or "%{" in inner:
        return None
    return inner.encode().decode("unicode_escape") if "\\" in inner else inner


class _Parser:
    def __init__(self, src: str, name: str):
        self.toks = tokenize(src)
        self.i = 0
        self.name = name

    def error(self, msg: str) -> ParseError:
        line = self.toks[self.i][2] if self.i < len(self.toks) else "end"
        return ParseError(f"{self.name}:{line}: {msg}")

    def peek(self, k: int = 0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else ("eof", "", 0)

    def body(self, closing: str | None) -> list:
        items: list = []
        while True:
            kind, text, line = self.peek()
            if kind == "newline":
                self.i += 1
                continue
            if kind == "eof":
                if closing:
                    raise self.error("missing `}`")
                return items
            if kind == "punct" and text == "}" and closing:
                self.i += 1
                return items
            if kind != "ident":
                raise self.error(f"expected an argument or block name, found {text!r}")
            self.i += 1
            nkind, ntext, _ = self.peek()
            if nkind == "punct" and ntext == "=":
                self.i += 1
                items.append(self.attribute(text, line))
                continue
            labels = []
            while self.peek()[0] in ("string", "ident"):
                tok = self.peek()[1]
                labels.append(tok[1:-1] if tok.startswith('"') else tok)
                self.i += 1
            if self.peek()[:2] != ("punct", "{"):
                raise self.error(f"`{text}`: expected `=` or a block")
            self.i += 1
            items.append(Block(text, labels, line, self.body("}")))

    def attribute(self, name: str, line: int) -> Attribute:
        start = self.i
        stack: list[str] = []
        while True:
            kind, text, _ = self.peek()
            if kind == "eof":
                break
            if kind == "newline" and not stack:
                break
            if kind == "punct" and text == "}" and not stack:
                break  # a one-line block: `x { a = 1 }`
            if kind == "punct" and text in _OPEN:
                stack.append(_OPEN[text])
            elif kind == "punct" and text in (")", "]", "}"):
                if not stack or stack.pop() != text:
                    raise self.error(f"unbalanced {text!r}")
            self.i += 1
        toks = self.toks[start:self.i]
        raw = " ".join(t[1] for t in toks if t[0] != "newline")
        literal = _unquote(toks[0][1]) if len(toks) == 1 and toks[0][0] == "string" else None
        if not toks:
            raise self.error(f"`{name} =` without a value")
        return Attribute(name, line, raw, literal)


def parse(src: str, name: str = "<input>") -> list:
    """The top-level body of one .tf file."""
    return _Parser(src, name).body(None)
