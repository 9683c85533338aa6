"""Hash slots: which of a Valkey Cluster's 16384 slots a key lives in.

Pure arithmetic, the same on a single Valkey (which has no slots, but runs the
same code) and on a cluster. `slot_tag` names, for every slot, a short hash tag
that lands in it, so that a per-slot key (the outbox, chat/store/outbox.py) can
sit in the same slot as any user's keys and be written by the same script.
"""

from __future__ import annotations

import binascii
import functools

SLOTS = 16384


def key_slot(key: str | bytes) -> int:
    """The slot of `key`: CRC16 (XMODEM) of its hash tag, or of the whole key."""
    raw = key.encode() if isinstance(key, str) else key
    start = raw.find(b"{")
    if start != -1:
        end = raw.find(b"}", start + 1)
        # An empty tag `{}` does not count: the whole key is hashed.
        if end > start + 1:
            raw = raw[start + 1 : end]
    # binascii.crc_hqx is CRC-16/XMODEM, the one Redis Cluster specifies.
    return binascii.crc_hqx(raw, 0) % SLOTS


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = digits[digit] + text
        if number == 0:
            return text


@functools.cache
def _tags() -> tuple[str, ...]:
    # The first base-36 string found for each slot: deterministic, so every
    # process (and every version) names the same key for the same slot.
    found: list[str | None] = [None] * SLOTS
    missing = SLOTS
    candidate = 0
    while missing:
        tag = _base36(candidate)
        slot = binascii.crc_hqx(tag.encode(), 0) % SLOTS
        if found[slot] is None:
            found[slot] = tag
            missing -= 1
        candidate += 1
    return tuple(tag for tag in found if tag is not None)


def slot_tag(slot: int) -> str:
    """A short hash tag whose slot is `slot`."""
    return _tags()[slot]


def all_slot_tags() -> tuple[str, ...]:
    """Every slot's tag, indexed by slot."""
    return _tags()
