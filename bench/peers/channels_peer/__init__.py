"""A minimal Django Channels project: channels_redis carries each message.

    REDIS_URL=unix:///path/valkey.sock python -m bench.peers.channels_peer --port 8004

`/ws?user=U` is an `AsyncWebsocketConsumer` that joins the group `user.U`. A
frame `{"type":"send","to":V,"text":T,"client_id":C}` becomes
`group_send("user.V", ...)`, and each consumer in that group, in whichever
process, writes `{"type":"message","message":{"id","from","to","text"}}` to its
socket. The layer is channels_redis's `RedisChannelLayer` (the default one);
`CHANNELS_LAYER=pubsub` switches to its `RedisPubSubChannelLayer`.
"""
