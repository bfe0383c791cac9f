"""Tokens of a C litmus test.

Comments: `(* ... *)` (nesting, as herd's OCaml-style comments) outside the
process bodies, and `/* ... */` and `// ...` anywhere.  Inside a process body
`(*` is C (`(*x)`), so the lexer follows the braces: a `{` at depth 0 right
after a `)` opens a process body.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import LitmusSyntaxError

# Longest first.
_OPS3 = ("<<=", ">>=")
_OPS2 = ("/\\", "\\/", "=>", "==", "!=", "<=", ">=", "<<", ">>", "&&", "||", "++", "--", "->",
         "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=")
_OPS1 = "{}()[];,*&=+-/%^|!~<>:?."


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


def tokenize(text: str, filename: str, start: int = 0, line: int = 1) -> tuple[list[Token], list[Comment]]:
    """Tokens and comments of text[start:], whose first character is on `line`."""
    toks: list[Token] = []
    comments: list[Comment] = []
    i = start
    n = len(text)
    line_start = text.rfind("\n", 0, start) + 1
    depth = 0
    body_depth: int | None = None  # brace depth of the process body we are in

    def err(msg: str, at: int) -> LitmusSyntaxError:
        return LitmusSyntaxError(msg, filename, line, at - line_start + 1)

    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
            line_start = i
            continue
        if c in " \t\r\f\v":
            i += 1
            continue
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            comments.append(Comment(text[i + 2:j], line))
            i = j
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise err("unterminated /* comment", i)
            comments.append(Comment(text[i + 2:j], line))
            for k in range(i, j):
                if text[k] == "\n":
                    line += 1
                    line_start = k + 1
            i = j + 2
            continue
        if text.startswith("(*", i) and body_depth is None:
            start_line, start_at, start_line_start = line, i, line_start
            level = 0
            j = i
            while True:
                if j >= n:
                    line, line_start = start_line, start_line_start
                    raise err("unterminated (* comment", start_at)
                if text.startswith("(*", j):
                    level += 1
                    j += 2
                elif text.startswith("*)", j):
                    level -= 1
                    j += 2
                    if level == 0:
                        break
                else:
                    if text[j] == "\n":
                        line += 1
                        line_start = j + 1
                    j += 1
            comments.append(Comment(text[i + 2:j - 2], start_line))
            i = j
            continue
        col = i - line_start + 1
        if c.isalpha() or c == "_":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            toks.append(Token("name", text[i:j], line, col))
            i = j
            continue
        if c.isdigit():
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            word = text[i:j]
            try:
                value = int(word, 0) if not (len(word) > 1 and word[0] == "0" and word[1].isdigit()) \
                    else int(word, 8)
            except ValueError:
                raise err(f"bad number {word!r}", i) from None
            toks.append(Token("num", word, line, col, value))
            i = j
            continue
        if c == '"':
            j = text.find('"', i + 1)
            if j < 0 or "\n" in text[i:j]:
                raise err("unterminated string", i)
            toks.append(Token("str", text[i + 1:j], line, col))
            i = j + 1
            continue
        op = next((o for o in _OPS3 + _OPS2 if text.startswith(o, i)), None)
        if op is None and c in _OPS1:
            op = c
        if op is None:
            raise err(f"unexpected character {c!r}", i)
        if op == "{":
            if depth == 0 and toks and toks[-1].text == ")" and toks[-1].kind == "op":
                body_depth = 1
            depth += 1
        elif op == "}":
            depth -= 1
            if body_depth is not None and depth == 0:
                body_depth = None
        toks.append(Token("op", op, line, col))
        i += len(op)
    toks.append(Token("eof", "", line, i - line_start + 1))
    return toks, comments
