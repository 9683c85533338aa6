"""chat/store/lua.py's Library: each script gets the shared functions it calls,
directly or through another, in their sources' order, and nothing else."""

from __future__ import annotations

import pytest

from chat.store.lua import Library, LibraryError
from chat.store.sends import (
    SEND_APPLY_LUA,
    SEND_DECIDE_LUA,
    SEND_PREPARE_LUA,
    SEND_UNMARK_LUA,
    SEND_WHOLE_LUA,
)

FIRST = """-- Why a.
local A = 1

-- Why twice.
local function twice(x)
  return 2 * x * A
end
"""
SECOND = """local function unused()
  return twice(1)
end
-- Calls twice.
local function four()
  return twice(2)
end
"""


def test_a_script_gets_what_it_calls_and_what_that_calls_in_order() -> None:
    library = Library(FIRST, SECOND)
    script = library.script("return four()\n")
    assert script == (
        "-- Why a.\nlocal A = 1\n"
        "-- Why twice.\nlocal function twice(x)\n  return 2 * x * A\nend\n"
        "-- Calls twice.\nlocal function four()\n  return twice(2)\nend\n"
        "return four()\n"
    )
    assert "unused" not in script


def test_a_name_in_a_comment_is_not_a_call() -> None:
    assert Library(FIRST, SECOND).script("-- four()\nreturn 1\n") == "-- four()\nreturn 1\n"


def test_a_top_level_statement_in_a_library_is_refused() -> None:
    with pytest.raises(LibraryError):
        Library("local function f() end\nredis.call('DEL', 'x')\n")
    with pytest.raises(LibraryError):
        Library(FIRST, FIRST)


def test_the_one_script_send_carries_none_of_the_steps_own_functions() -> None:
    for name in ("owed_messages", "apply_owed", "unmark_send", "outbox_add", "charged_bucket"):
        assert f"local function {name}(" not in SEND_WHOLE_LUA
    assert "local function outbox_add(" in SEND_DECIDE_LUA
    assert "local function decide(" not in SEND_PREPARE_LUA + SEND_APPLY_LUA
    assert "local function unmark_send(" in SEND_UNMARK_LUA
