"""Tokens of a C litmus test.

Comments: `(* ... *)` (nesting, as herd's OCaml-style comments) outside the
process bodies, and `/* ... */` and `// ...` anywhere.  Inside a process body
`(*` is C (`(*x)`), so the lexer follows the braces: a `{` at depth 0 right
after a `)` opens a process body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import LitmusSyntaxError

_COMMENT_BRACKET = re.compile(r"\(\*|\*\)")


@dataclass(frozen=True)
class Token:
    kind: str  # "name", "num", "str", "op", "eof"
    text: str
    line: int
    col: int
    value: int = 0  # for "num"


@dataclass(frozen=True)
class Comment:
    text: str
    line: int


_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\f\v]+)
  | (?P<nl>\n)
  | (?P<line>//[^\n]*)
  | (?P<block>/\*)
  | (?P<ml>\(\*)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<num>[0-9][A-Za-z0-9_]*)
  | (?P<str>"[^"\n]*")
  | (?P<op><<=|>>=|/\\|\\/|=>|==|!=|<=|>=|<<|>>|&&|\|\||\+\+|--|->|[-+*/%&|^]=|[{}()\[\];,*&=+\-/%^|!~<>:?.])
""", re.VERBOSE)


def tokenize(text: str, filename: str, start: int = 0, line: int = 1) -> tuple[list[Token], list[Comment]]:
    """Tokens and comments of text[start:], whose first character is on `line`."""
    toks: list[Token] = []
    comments: list[Comment] = []
    i = start
    n = len(text)
    line_start = text.rfind("\n", 0, start) + 1
    depth = 0
    in_body = False  # inside a process body, where `(*` is C

    def err(msg: str, at: int) -> LitmusSyntaxError:
        return LitmusSyntaxError(msg, filename, line, at - line_start + 1)

    def skip_lines(a: int, b: int) -> None:
        nonlocal line, line_start
        newlines = text.count("\n", a, b)
        if newlines:
            line += newlines
            line_start = text.rfind("\n", a, b) + 1

    while i < n:
        m = _TOKEN.match(text, i)
        if m is None:
            if text[i] == '"':
                raise err("unterminated string", i)
            raise err(f"unexpected character {text[i]!r}", i)
        kind = m.lastgroup
        j = m.end()
        if kind == "ws":
            pass
        elif kind == "nl":
            line += 1
            line_start = j
        elif kind == "line":
            comments.append(Comment(m.group()[2:], line))
        elif kind == "block":
            k = text.find("*/", j)
            if k < 0:
                raise err("unterminated /* comment", i)
            comments.append(Comment(text[j:k], line))
            skip_lines(i, k)
            j = k + 2
        elif kind == "ml" and not in_body:
            level, k = 0, i
            while True:
                b = _COMMENT_BRACKET.search(text, k)
                if b is None:
                    raise err("unterminated (* comment", i)
                level += 1 if b.group() == "(*" else -1
                k = b.end()
                if level == 0:
                    break
            comments.append(Comment(text[j:k - 2], line))
            skip_lines(i, k)
            j = k
        elif kind == "ml":  # `(*` in C: two tokens
            col = i - line_start + 1
            toks.append(Token("op", "(", line, col))
            toks.append(Token("op", "*", line, col + 1))
        else:
            word = m.group()
            col = i - line_start + 1
            if kind == "num":
                try:
                    value = int(word, 8) if len(word) > 1 and word[0] == "0" and word[1].isdigit() \
                        else int(word, 0)
                except ValueError:
                    raise err(f"bad number {word!r}", i) from None
                toks.append(Token("num", word, line, col, value))
            elif kind == "str":
                toks.append(Token("str", word[1:-1], line, col))
            else:
                if word == "{":
                    if depth == 0 and toks and toks[-1].kind == "op" and toks[-1].text == ")":
                        in_body = True
                    depth += 1
                elif word == "}":
                    depth -= 1
                    if depth == 0:
                        in_body = False
                toks.append(Token(kind, word, line, col))  # type: ignore[arg-type]
        i = j
    toks.append(Token("eof", "", line, i - line_start + 1))
    return toks, comments
