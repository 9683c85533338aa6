"""The store's Lua scripts, read from the package (chat/store/scripts).

A leaf module: every store module that registers scripts reads them through
`script`, so where and how they are found is decided once.
"""

from __future__ import annotations

from importlib import resources


def script(name: str) -> str:
    """The source of chat/store/scripts/<name>."""
    return resources.files("chat.store").joinpath("scripts", name).read_text()
