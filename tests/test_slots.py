"""Hash slots: the pure arithmetic, checked against what a real cluster says."""

from __future__ import annotations

import pytest

from chat.store.slots import SLOTS, key_slot
from tests.cluster_support import SLOT_RANGES, ValkeyCluster, handles_on_shards


@pytest.mark.parametrize(
    ("key", "same_as"),
    [
        ("user:{alice}", "alice"),
        ("{alice}", "alice"),
        ("a{}b", "a{}b"),  # an empty tag hashes the whole key
        ("a{b}{c}", "b"),  # the first tag only
        ("a{{b}}", "{b"),  # up to the first } after the first {
        ("a}b{c", "a}b{c"),  # no } after the {
        ("{ip:10.0.0.1}", "ip:10.0.0.1"),
    ],
)
def test_the_hashed_part_is_the_first_nonempty_tag(key: str, same_as: str) -> None:
    assert key_slot(key) == key_slot(same_as.encode())


def test_known_slots() -> None:
    # Values from the Redis Cluster specification and CLUSTER KEYSLOT.
    assert key_slot("123456789") == 0x31C3 % SLOTS  # the CRC16 check value
    assert key_slot("foo") == 12182
    assert key_slot("somekey") == 11058
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers") == 3443
    assert key_slot(b"user:{alice}") == key_slot("ch:{alice}") == key_slot("alice")


def test_handles_on_shards_land_on_distinct_masters() -> None:
    handles = handles_on_shards(6)
    assert len(set(handles)) == 6 and all(len(h) <= 15 and h.islower() for h in handles)
    for i, lc in enumerate(handles):
        first, last = SLOT_RANGES[i % 3]
        assert first <= key_slot(f"user:{{{lc}}}") <= last


def test_the_cluster_agrees_with_key_slot(valkey_cluster: ValkeyCluster) -> None:
    keys = [
        "123456789",
        "foo",
        "somekey",
        "{user1000}.following",
        "user:{alice}",
        "a{}b",
        "a{{b}}",
        "ü{é}",
        *handles_on_shards(3),
    ]
    client = valkey_cluster.masters[0].client()
    try:
        for key in keys:
            assert client.execute_command("CLUSTER", "KEYSLOT", key) == key_slot(key), key
        info = client.execute_command("CLUSTER", "INFO")
        assert "cluster_state:ok" in info and "cluster_size:3" in info
    finally:
        client.close()
