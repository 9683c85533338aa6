"""The one consumer: a user's socket, in the group `user.<handle>`."""

from __future__ import annotations

import itertools
import json
import os
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer

_ids = itertools.count(1)
_pid = os.getpid()


def group_of(user: str) -> str:
    return f"user.{user}"


class RelayConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    user = ""

    async def connect(self) -> None:
        query = parse_qs(self.scope.get("query_string", b"").decode())
        user = (query.get("user") or [""])[0]
        if not user:
            await self.close(code=1008)
            return
        self.user = user
        await self.channel_layer.group_add(group_of(user), self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.user:
            await self.channel_layer.group_discard(group_of(self.user), self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            frame: Any = json.loads(text_data or "")
        except ValueError:
            return
        if not isinstance(frame, dict) or frame.get("type") != "send":
            return
        to, text = frame.get("to"), frame.get("text")
        if not isinstance(to, str) or not isinstance(text, str):
            return
        message = {"id": f"{_pid}-{next(_ids)}", "from": self.user, "to": to, "text": text}
        event = {"type": "dm.message", "message": message}
        await self.channel_layer.group_send(group_of(to), event)

    async def dm_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps({"type": "message", "message": event["message"]}))
