"""The store's Lua scripts, read from the package (chat/store/scripts).

A leaf module: every store module that registers scripts reads them through
`script`, so where and how they are found is decided once; and `Library`
puts in front of a script the shared functions it calls, and only those.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cached_property
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


# `#!lua flags=a,b` on a script's first line: its flags (docs: "Script flags").
_SHEBANG = re.compile(r"#!lua(?:[ \t]+flags=([A-Za-z0-9_,-]*))?[ \t]*\n")
LIBRARY_PREFIX = "dmhub"
# Lua 5.1's limits (luaconf.h): a function reaches at most 60 locals of the
# chunk around it (upvalues), a chunk has at most 200 locals.
MAX_UPVALUES = 60
MAX_LOCALS = 200
# The library's own locals: every call sets them (see FunctionLibrary).
_CALL_LOCALS = ("KEYS", "ARGV")


@dataclass(frozen=True, eq=False)
class Function:
    """One script of the hot path, run as a function of the library
    (`FCALL`) over the lane, or as `script` (EVALSHA) without a lane."""

    name: str
    body: str  # the script's text, its shebang line left out
    flags: tuple[str, ...]
    script: str  # the EVAL form: shebang, the pieces it calls, the body
    library: FunctionLibrary

    @cached_property
    def sha(self) -> str:
        """The EVAL form's SHA-1, as EVALSHA names it."""
        return hashlib.sha1(self.script.encode()).hexdigest()

    @cached_property
    def qualified(self) -> str:
        """The name it is registered under: its library's name goes in front,
        since function names are global to a Valkey and two dmhub versions may
        share one during a rolling deploy."""
        return f"{self.library.name}_{self.name}"


class FunctionLibrary:
    """The hot path's scripts as ONE Valkey function library (`FUNCTION LOAD`).

    Valkey runs an EVAL script's top level on every call: each shared
    `local function` in front of it is a closure made again per call, and
    EVALSHA builds the KEYS/ARGV tables. A library's top level runs once, at
    load: the shared pieces are defined once and each script becomes a
    registered function around its unchanged body. A body reads KEYS and ARGV
    as before; so do the pieces that read ARGV themselves (owed_messages):
    both are locals of the library that each call sets first (a function
    runs to its end before another starts, so no call sees another's).

    Modules add their scripts at import (`add`); the source is built at its
    first use and frozen from then on. Its name carries a hash of the source,
    so a changed script is a new library, loaded next to the old one.
    """

    def __init__(self, prefix: str = LIBRARY_PREFIX) -> None:
        self.prefix = prefix
        self._functions: dict[str, Function] = {}
        self._libraries: dict[str, Library | None] = {}
        self._built: tuple[str, str] | None = None

    def add(
        self,
        name: str,
        source: str,
        library: Library | None = None,
        *,
        flags: tuple[str, ...] = (),
    ) -> Function:
        """Register script `source` as function `name`, with the pieces of
        `library` it calls. `flags` add to those of its `#!lua flags=` line: a
        function without `no-writes` is refused at maxmemory before it runs,
        where an EVAL script without a shebang failed at its first write only."""
        if self._built is not None:
            raise LibraryError(f"{name}: the library is built already")
        if name in self._functions:
            raise LibraryError(f"a function named twice: {name}")
        if _NAME.fullmatch(name) is None:
            raise LibraryError(f"not a function name: {name!r}")
        shebang = _SHEBANG.match(source)
        body = source[shebang.end() :] if shebang else source
        declared = (shebang.group(1) or "").split(",") if shebang else []
        flags = tuple(dict.fromkeys(f for f in (*declared, *flags) if f))
        needed = library.needed(body) if library is not None else frozenset()
        direct = [n for n in _names(body) if n in needed]
        if len(direct) + len(_CALL_LOCALS) > MAX_UPVALUES:
            raise LibraryError(f"{name} calls {len(direct)} library functions, Lua allows fewer")
        script = (shebang.group(0) if shebang else "") + (
            library.script(body) if library is not None else body
        )
        function = Function(name, body, flags, script, self)
        self._functions[name] = function
        self._libraries[name] = library
        return function

    @property
    def functions(self) -> dict[str, Function]:
        return dict(self._functions)

    @property
    def name(self) -> str:
        return self._build()[0]

    @property
    def source(self) -> str:
        """The text FUNCTION LOAD takes."""
        return self._build()[1]

    def _build(self) -> tuple[str, str]:
        if self._built is None:
            # Each library's pieces that some function calls, in that
            # library's order (a local is visible only below its definition).
            needed: dict[int, tuple[Library, set[str]]] = {}
            for name, function in self._functions.items():
                library = self._libraries[name]
                if library is not None:
                    needed.setdefault(id(library), (library, set()))[1].update(
                        library.needed(function.body)
                    )
            pieces: dict[str, Piece] = {}
            order: list[Piece] = []
            for library, names in needed.values():
                for piece in library.pieces:
                    if piece.name not in names:
                        continue
                    known = pieces.get(piece.name)
                    if known is None:
                        pieces[piece.name] = piece
                        order.append(piece)
                    elif known.text != piece.text:
                        raise LibraryError(f"a name defined twice: {piece.name}")
            if len(order) + len(_CALL_LOCALS) > MAX_LOCALS:
                raise LibraryError("more library pieces than Lua allows locals")
            parts = [f"local {', '.join(_CALL_LOCALS)}\n"]
            parts.extend(piece.text for piece in order)
            for function in self._functions.values():
                parts.append(self._registration(function))
            code = "".join(parts)
            digest = hashlib.sha1(code.encode()).hexdigest()[:12]
            name = f"{self.prefix}_{digest}"
            # The function names carry the library's: substituted last, so the
            # hash is of everything else.
            code = code.replace("\x00LIBRARY\x00", name)
            self._built = (name, f"#!lua name={name}\n{code}")
        return self._built

    @staticmethod
    def _registration(function: Function) -> str:
        # `redis.`, not `server.`: Redis 7 knows only the former, Valkey both.
        flags = ", ".join(f"'{flag}'" for flag in function.flags)
        body = function.body if function.body.endswith("\n") else function.body + "\n"
        return (
            f"redis.register_function{{function_name = '\x00LIBRARY\x00_{function.name}',"
            f" flags = {{{flags}}}, callback = function(keys, argv)\n"
            f"KEYS, ARGV = keys, argv\n{body}end}}\n"
        )


# The one library of the hot path's scripts (the lane runs them with FCALL):
# chat/store/sends.py, store.py and outbox.py add theirs.
HOT = FunctionLibrary()
