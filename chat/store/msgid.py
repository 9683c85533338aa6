"""Message ids without a global counter: the arithmetic, pure.

An id is an integer below 2**53 (exact as a sorted-set score and in Lua),
written as a decimal string. It is issued in the slot where the message is
decided (the recipient's, see send_decide.lua), hybrid-logical-clock style:
at least the slot's clock in microseconds, above the last id that slot issued,
above everything the sender had seen of the conversation (`floor`: the top of
the sender's view) and above the top of the recipient's view. So a reply always
sorts after what its writer had seen, in both views.

The two directions of one conversation come from two different generators, so
they are kept apart by parity: s → r ids are odd when s < r, even otherwise.
Ids are then unique in each view (and a message has the same id in both), and
time-ordered. chat/store/scripts/msgid.lua is the Lua twin of `next_id`;
tests/test_msgid.py holds the two equal.
"""

from __future__ import annotations

# Ids per millisecond of the clock: room for bursts before ids run ahead of it.
IDS_PER_MS = 1000
# Scores and Lua numbers are doubles: integers are exact below this, which the
# clock part reaches in the year 2255.
MAX_ID = 2**53 - 1


def direction(sender: str, recipient: str) -> int:
    """The parity of the ids of messages from `sender` to `recipient` (lower case)."""
    return 1 if sender < recipient else 0


def next_id(now_ms: int, last: int, floor: int, top: int, parity: int) -> int:
    """The id after `last` (this slot's last id), `floor` (the sender's view) and
    `top` (the recipient's view), at or after the clock, of the given parity."""
    candidate = max(now_ms * IDS_PER_MS, last + 1, floor + 1, top + 1)
    if candidate % 2 != parity:
        candidate += 1
    return candidate
