"""The Django Channels peer of bench/redis_bench.py: RedisPubSubChannelLayer under uvicorn.

    python bench/peers/channels_redis_server.py --port P --redis URL [--loop uvloop|asyncio]

A minimal Channels application (Django configured in this file, no project),
``channels_redis.pubsub.RedisPubSubChannelLayer`` on Redis at URL, under
uvicorn (see _uvicorn.py):

- ``/sub/<topic>/``: an ``AsyncWebsocketConsumer`` that joins the group
  ``<topic>`` (``group_add``), accepts, and is sent ``joined``; each group
  message is sent to it as text.
- ``/pub/<topic>/``: accepts and is sent ``joined``; each text message it
  sends goes to the group with ``group_send`` (one PUBLISH to the group's
  channel; each instance with members of the group delivers to them).
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path
from typing import Any

import django
from _uvicorn import serve
from django.conf import settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from redis_node import cli


def application(url: str) -> Any:
    """Configure Django with the channel layer on ``url``; return the ASGI application."""
    settings.configure(
        INSTALLED_APPS=["channels"],
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": [url]},
            }
        },
    )
    django.setup()
    # Channels reads the settings on import.
    from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: PLC0415
    from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: PLC0415
    from django.urls import path  # noqa: PLC0415

    class Subscriber(AsyncWebsocketConsumer):  # type: ignore[misc]
        async def connect(self) -> None:
            self.topic = self.scope["url_route"]["kwargs"]["topic"]
            await self.channel_layer.group_add(self.topic, self.channel_name)
            await self.accept()
            await self.send(text_data="joined")

        async def disconnect(self, code: int) -> None:
            await self.channel_layer.group_discard(self.topic, self.channel_name)

        async def bench_message(self, event: dict[str, Any]) -> None:
            await self.send(text_data=event["text"])

    class Publisher(AsyncWebsocketConsumer):  # type: ignore[misc]
        async def connect(self) -> None:
            self.topic = self.scope["url_route"]["kwargs"]["topic"]
            await self.accept()
            await self.send(text_data="joined")

        async def receive(self, text_data: str | None = None, bytes_data: Any = None) -> None:
            await self.channel_layer.group_send(
                self.topic, {"type": "bench.message", "text": text_data}
            )

    return ProtocolTypeRouter(
        {
            "websocket": URLRouter(
                [
                    path("sub/<str:topic>/", Subscriber.as_asgi()),
                    path("pub/<str:topic>/", Publisher.as_asgi()),
                ]
            )
        }
    )


async def main(port: int, url: str) -> None:
    """Serve until SIGINT or SIGTERM."""
    versions = " ".join(
        f"{name}={importlib.metadata.version(name)}" for name in ("channels", "channels_redis")
    )
    await serve(application(url), port, versions)


if __name__ == "__main__":
    cli(main, __doc__.splitlines()[0])
