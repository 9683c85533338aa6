"""The store's Lua scripts, read from the package (chat/store/scripts).

A leaf module: every store module that registers scripts reads them through
`script`, so where and how they are found is decided once; and `Library`
puts in front of a script the shared functions it calls, and only those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

# A top-level definition of a library file: `local function name(` or
# `local name =`, at the start of a line.
_DEFINITION = re.compile(r"local\s+(?:function\s+)?([A-Za-z_][A-Za-z0-9_]*)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMMENT = re.compile(r"--[^\n]*")


def script(name: str) -> str:
    """The source of chat/store/scripts/<name>."""
    return resources.files("chat.store").joinpath("scripts", name).read_text()


class LibraryError(ValueError):
    """A library file holds something other than top-level definitions."""


@dataclass(frozen=True, slots=True)
class Piece:
    """One top-level definition of a library file, with the comment above it."""

    name: str
    text: str
    uses: frozenset[str]


def _names(text: str) -> frozenset[str]:
    return frozenset(_NAME.findall(_COMMENT.sub("", text)))


def _pieces(source: str) -> list[Piece]:
    pieces: list[Piece] = []
    lines = source.splitlines(keepends=True)
    starts: list[tuple[int, str]] = []
    for at, line in enumerate(lines):
        if line[:1] in ("", " ", "\t", "\n", "-") or line.startswith(("end", "}")):
            continue
        match = _DEFINITION.match(line)
        if match is None:
            raise LibraryError(f"not a definition at the top level: {line!r}")
        first = at
        while first > 0 and lines[first - 1].startswith("--"):
            first -= 1
        starts.append((first, match.group(1)))
    for index, (first, name) in enumerate(starts):
        end = starts[index + 1][0] if index + 1 < len(starts) else len(lines)
        text = "".join(lines[first:end]).rstrip("\n") + "\n"
        pieces.append(Piece(name, text, _names(text) - {name}))
    return pieces


class Library:
    """Shared Lua functions (rule.lua, limits.lua, msgid.lua ...) from which each
    script gets only those it calls, directly or through another.

    Valkey runs a script's top level on every call, so every `local function`
    in front of it is a closure made again each time (docs/performance.md):
    a script carrying the whole library paid for ~30 functions it mostly never
    called. The pieces keep their sources' order (a local is visible only
    below its definition) and their text, so every script runs the same code.
    """

    def __init__(self, *sources: str) -> None:
        self.pieces: list[Piece] = [piece for source in sources for piece in _pieces(source)]
        self._by_name = {piece.name: piece for piece in self.pieces}
        if len(self._by_name) != len(self.pieces):
            raise LibraryError("a name defined twice")

    def piece(self, name: str) -> str:
        """The text of the definition of `name`."""
        return self._by_name[name].text

    def needed(self, body: str) -> frozenset[str]:
        """The library's names `body` calls, and those they call in turn."""
        needed: set[str] = set()
        todo = [name for name in _names(body) if name in self._by_name]
        while todo:
            name = todo.pop()
            if name in needed:
                continue
            needed.add(name)
            todo.extend(used for used in self._by_name[name].uses if used in self._by_name)
        return frozenset(needed)

    def script(self, body: str) -> str:
        """`body` with the definitions it needs in front."""
        needed = self.needed(body)
        return "".join(piece.text for piece in self.pieces if piece.name in needed) + body
