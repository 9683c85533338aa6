"""Redis key names, in one place (docs/architecture.md describes each).

Users are keyed by their lower-cased handle, so lookups are case-insensitive
while the handle as typed is kept in the user hash.
"""

import functools
import zlib

from chat.store.slots import SLOTS, key_slot, slot_tag


def user(lc: str) -> str:
    return f"user:{{{lc}}}"


def session(token_hash: str) -> str:
    return f"sess:{token_hash}"


def following(lc: str) -> str:
    return f"fwing:{{{lc}}}"


def followers(lc: str) -> str:
    return f"fwers:{{{lc}}}"


def blocking(lc: str) -> str:
    return f"blk:{{{lc}}}"


def blocked_by(lc: str) -> str:
    return f"blkby:{{{lc}}}"


def wrote(lc: str) -> str:
    return f"wrote:{{{lc}}}"


def view(me: str, peer: str) -> str:
    """Sorted set: `me`'s view of the conversation with `peer`, in me's slot.
    Score: the message id; member: `<sender lc> <message JSON as me sees it>`."""
    return f"msgs:{{{me}}}:{peer}"


def heard(lc: str) -> str:
    """Set: everyone who ever wrote to lc (the mirror of their `wrote`, in lc's slot)."""
    return f"heard:{{{lc}}}"


def ack_mark(slot: int) -> str:
    """String + PX, in `slot`: written by DMHUB_ACK_REPLICAS before a WAIT, so
    that the WAIT covers what other connections wrote to that slot's master
    before it (replicas.py)."""
    return f"ackmark:{{{slot_tag(slot)}}}"


def sending(lc: str, peer: str) -> str:
    """String (a count) + PX: how many of lc's sends to peer are between their
    first and last step; expires soon after the last one began (a crash). A
    plain key, not a field of a per-user hash: a field with its own expiry
    costs Valkey several times a plain key's INCR (docs/performance.md)."""
    return f"sending:{{{lc}}}:{peer}"


def client_ids_in(lc: str) -> str:
    """Hash: `<sender lc>:<client_id>` → `<id>|<outbox entry id>` for sends to lc:
    the dedupe of the step that decides a send, in the recipient's slot."""
    return f"cidin:{{{lc}}}"


def inbox(lc: str) -> str:
    return f"cin:{{{lc}}}"


def requests(lc: str) -> str:
    return f"creq:{{{lc}}}"


def cleared(lc: str) -> str:
    return f"clr:{{{lc}}}"


def client_ids(lc: str) -> str:
    return f"cid:{{{lc}}}"


def events(lc: str) -> str:
    return f"ev:{{{lc}}}"


def channel(lc: str) -> str:
    return f"ch:{{{lc}}}"


CHANNEL_PREFIX = "ch:{"


def channel_user(channel_name: str) -> str:
    """The user whose channel this is (the inverse of `channel`)."""
    return channel_name[len(CHANNEL_PREFIX) : -1]


def folder_key(lc: str, folder: str) -> str:
    return inbox(lc) if folder == "inbox" else requests(lc)


def receipts_delivered(lc: str) -> str:
    """Hash: reader → the last read receipt's up_to delivered to lc (what makes
    the receipt's second step idempotent); a field per conversation."""
    return f"rcpt:{{{lc}}}"


# The last id issued in lc's slot (chat/store/msgid.py): message ids, and the
# order of the follows and blocks lc makes. A field of the user hash, read in
# the HMGET the send makes of it anyway (send_parts.lua): one GET and one SET
# less per send than a key of its own.
ID_GENERATOR_FIELD = "idgen"


def view_top_field(peer: str) -> str:
    """The field of a user hash holding the highest id in the owner's view of
    the conversation with peer (`view(owner, peer)`): kept by every script that
    writes a view, in the HSET it makes of the hash anyway, so the one-script
    send reads both tops in its HMGETs instead of a ZREVRANGE of each view
    (send_parts.lua, store_sender_state)."""
    return f"t:{peer}"


def pair_field(peer: str) -> str:
    """The field of a user hash holding the relationship facts of the pair
    (owner, peer) as letters (chat/store/scripts/pair_flags.lua): what a send
    reads in the HMGET it makes of each hash anyway."""
    return f"p:{peer}"


def read_field(peer: str) -> str:
    """The field of a user hash holding the owner's read pointer in the
    conversation with peer (the id of the last message read): moved by a read
    (read.lua) and by every message the owner sends (a reply means read), in
    the HSET the send makes of the hash anyway (store_sender_state)."""
    return f"r:{peer}"


def unread_field(peer: str) -> str:
    """The field of a user hash counting peer's messages the owner has not read:
    raised by each of peer's messages in the HSET the recipient's side makes of
    the hash anyway (apply_recipient_side, after reading it in the rule's
    HMGET), set to what is left by a read or a reply. "0" and no field both
    mean none: a reply writes "0" rather than making a call to delete it."""
    return f"u:{peer}"


def read_state_before(lc: str) -> tuple[str, str]:
    """Where the unread counts and read pointers were kept before they became
    fields of the user hash (`unread:{lc}`, `rd:{lc}`): nothing reads or
    writes them any more; `dmhub admin backfill` moves them into the user hash
    (chat/store/backfill.py), and an account's deletion removes any left
    (docs/architecture.md)."""
    return f"unread:{{{lc}}}", f"rd:{{{lc}}}"


# The letters, relative to the hash's owner X and the peer Y, each the twin of
# a collection's member (which stays: lists and pages read them).
BLOCKS = "b"  # X blocks Y: blk:{x} ∋ Y
BLOCKED_BY = "B"  # Y blocks X: blkby:{x} ∋ Y
FOLLOWS = "f"  # X follows Y: fwing:{x} ∋ Y
FOLLOWED_BY = "F"  # Y follows X: fwers:{x} ∋ Y
WROTE = "w"  # X wrote to Y: wrote:{x} ∋ Y
HEARD = "h"  # Y wrote to X: heard:{x} ∋ Y


# Sign-in and sign-up throttling (v1.1 Limits). Per-IP keys carry the IP in their
# hash tag so that one IP's counters live in one slot; per-account keys live in
# the account's slot. All expire.


def ip_login_failures(ip: str) -> str:
    return f"lf:{{ip:{ip}}}"


def ip_signups(ip: str) -> str:
    return f"su:{{ip:{ip}}}"


def account_login_failures(lc: str, ip: str) -> str:
    return f"lfa:{{{lc}}}:{ip}"


# A user's sessions (v1.1 accounts): the index that lists them and ends them all.


def session_index(lc: str) -> str:
    """Sorted set: token hash → when the session expires (ms)."""
    return f"sessions:{{{lc}}}"


def session_info(lc: str) -> str:
    """Hash: token hash → JSON {created, ip, agent}."""
    return f"sessinfo:{{{lc}}}"


# -- webhooks: every key of one account under its hash tag {lc} ------------------

# The index of accounts that have webhooks is split into shards, each its own
# hash slot, so that no single key (or Cluster node) holds every account.
WEBHOOK_INDEX_SHARDS = 16


def webhook_ids(lc: str) -> str:
    return f"whs:{{{lc}}}"


def webhook(lc: str, webhook_id: str) -> str:
    return f"wh:{{{lc}}}:{webhook_id}"


def webhook_lease(lc: str, webhook_id: str) -> str:
    return f"whl:{{{lc}}}:{webhook_id}"


def webhook_wake(lc: str) -> str:
    return f"whwake:{{{lc}}}"


def webhook_index(shard: int) -> str:
    return f"whidx:{{{shard}}}"


def webhook_index_shard(lc: str) -> int:
    # crc32, not hash(): every process must agree on the shard.
    return zlib.crc32(lc.encode()) % WEBHOOK_INDEX_SHARDS


# -- safety (PROTOCOL.md v1.1). Hash-tagged by user, ready for Valkey Cluster.


# The sender's `messages` token bucket (its theoretical arrival time, ms) is
# this field of its user hash, read with the sender's facts (send_parts.lua).
MESSAGE_RATE_FIELD = "msgrate"


def new_conversations(lc: str) -> str:
    """Recipients of the sender's first messages to non-followers, by time."""
    return f"newconv:{{{lc}}}"


def requests_received(lc: str) -> str:
    """Senders whose new conversations landed in lc's requests, by time."""
    return f"reqrecv:{{{lc}}}"


def typing_count(lc: str) -> str:
    return f"typing:{{{lc}}}"


def report_count(lc: str) -> str:
    """Reports lc made in the current window (the `reports` limit)."""
    return f"reportrate:{{{lc}}}"


def reports(lc: str) -> str:
    """Reports about lc, newest first, as operators read them."""
    return f"reports:{{{lc}}}"


def reporters(lc: str) -> str:
    """Who reported lc since the last clear, with when: what restriction weighs."""
    return f"reporters:{{{lc}}}"


def restriction(lc: str) -> str:
    """Why lc is restricted (exists only while it is)."""
    return f"restriction:{{{lc}}}"


# Teams (v1.1): a business's agents, the teams an agent belongs to, the team's
# state of each conversation and its internal notes. Each key lives in the slot
# of the user it belongs to (hash tag); membership is written to both sides,
# the business's set being the one that authorizes.


def team(business: str) -> str:
    return f"team:{{{business}}}"


def teams_of(agent: str) -> str:
    return f"teams:{{{agent}}}"


def team_conversations(business: str) -> str:
    return f"tconv:{{{business}}}"


def notes(business: str, peer: str) -> str:
    return f"notes:{{{business}}}:{peer}"


# -- the outbox (chat/store/outbox.py): one stream per hash slot, named by the
# slot's tag, so that the first step of a split operation can write it in the
# same script as its own effect, and the reconciler knows every outbox there is.


def outbox(lc: str) -> str:
    """The outbox in the slot of `lc`'s keys."""
    return outbox_of_slot(key_slot(lc))


def outbox_of_slot(slot: int) -> str:
    return f"obx:{{{slot_tag(slot)}}}"


@functools.cache
def every_outbox() -> tuple[str, ...]:
    """Every slot's outbox, indexed by slot: the reconciler names them all at
    every sweep, and building the 16,384 names took it about 6 ms each time."""
    return tuple(outbox_of_slot(slot) for slot in range(SLOTS))
