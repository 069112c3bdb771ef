"""Publishes per second from one process against one Redis, pipelined: the broker path.

    python bench/redis_publish.py --redis URL [--redis-pid PID] [--batches N,N] [--duration S]

One process (uvloop) publishes a 64-byte text as fast as it can, with a batch
of publishes in flight at a time (each size of ``--batches`` in turn), in
five ways:

- ``hub.publish()`` on ``rapidws.pubsub.RedisBroker``, a topic without
  history: the broker sends the publishes of one loop turn in one pipeline
  (PUBLISH each).
- the same on a topic with history (``History(size=1000)``): the broker's
  Lua script (EVALSHA: offset, XADD, PUBLISH) each.
- redis-py (hiredis) sending the batch's PUBLISH commands in one pipeline,
  without the broker: what the broker path costs on top of its client.
- redis-py's connection alone: the batch packed into one write
  (``pack_commands``) and its replies read with ``read_response()``: what
  redis-py costs without its pipeline object.
- the floor: the same PUBLISH commands encoded beforehand (RESP) and written
  on a plain asyncio stream, the replies counted by their line ends: what
  Redis and the loopback take, without any client library.

No node subscribes: the figure is the publish path alone. Reports each
way's publishes per second and the CPU use of this process and of Redis
(``--redis-pid``). Its last stdout line is ``result {json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as redis_asyncio
from run import process_cpu

from rapidws.pubsub import History, Hub, TopicOptions
from rapidws.pubsub.redis import RedisBroker

MESSAGE = "x" * 64
CHANNEL = b"rapidws:{floor}:c"


async def timed(
    publish_batch: Callable[[], Awaitable[Any]], batch: int, args: argparse.Namespace
) -> dict[str, float]:
    """Call ``publish_batch`` for ``--duration`` seconds after ``--warmup``; return the rates."""
    duration, redis_pid = args.duration, args.redis_pid
    deadline = time.perf_counter() + args.warmup
    while time.perf_counter() < deadline:
        await publish_batch()
    start, cpu = time.perf_counter(), time.process_time()
    redis_cpu = process_cpu(redis_pid) if redis_pid else 0.0
    count = 0
    while time.perf_counter() - start < duration:
        await publish_batch()
        count += batch
    elapsed = time.perf_counter() - start
    return {
        "publishes_per_s": count / elapsed,
        "cpu_pct": 100 * (time.process_time() - cpu) / elapsed,
        "redis_cpu_pct": 100 * (process_cpu(redis_pid) - redis_cpu) / elapsed if redis_pid else 0,
        "cpu_us_per_publish": 1e6 * (time.process_time() - cpu) / count,
    }


def resp(*parts: bytes) -> bytes:
    """Return a command in RESP, the Redis protocol (an array of bulk strings)."""
    encoded = b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)
    return b"*%d\r\n" % len(parts) + encoded


async def measure_batch(args: argparse.Namespace, batch: int) -> dict[str, Any]:
    """Measure the five ways in turn with ``batch`` publishes in flight."""
    result: dict[str, Any] = {}
    hub = Hub(RedisBroker(args.redis))
    hub.configure("kept", TopicOptions(history=History(size=1000)))
    async with hub:
        for topic in ("plain", "kept"):

            async def publish_batch(topic: str = topic) -> None:
                await asyncio.gather(*(hub.publish(topic, MESSAGE) for _ in range(batch)))

            result[topic] = await timed(publish_batch, batch, args)
    client = redis_asyncio.Redis.from_url(args.redis)
    message = b"1 0 - 0 0\n" + MESSAGE.encode()  # the broker's message for a topic without history

    async def pipeline_batch() -> None:
        async with client.pipeline(transaction=False) as pipe:
            for _ in range(batch):
                pipe.publish(CHANNEL, message)
            await pipe.execute()

    result["redis-py"] = await timed(pipeline_batch, batch, args)
    connection = await client.connection_pool.get_connection()
    packed = connection.pack_commands([("PUBLISH", CHANNEL, message)] * batch)

    async def packed_batch() -> None:
        await connection.send_packed_command(packed)
        for _ in range(batch):
            await connection.read_response()

    result["redis-py packed"] = await timed(packed_batch, batch, args)
    await client.connection_pool.release(connection)
    await client.aclose()
    host, port = args.redis.removeprefix("redis://").split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    commands = resp(b"PUBLISH", CHANNEL, message) * batch

    async def raw_batch() -> None:
        writer.write(commands)
        replies = 0
        while replies < batch:  # one ":<n>\r\n" integer reply per PUBLISH
            replies += (await reader.read(65536)).count(b"\n")

    result["floor"] = await timed(raw_batch, batch, args)
    writer.close()
    return result


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every batch size."""
    batches = [int(batch) for batch in args.batches.split(",")]
    return {str(batch): await measure_batch(args, batch) for batch in batches}


def main() -> None:
    """Parse the command line, measure, print the result line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", required=True)
    parser.add_argument("--redis-pid", type=int, default=0)
    parser.add_argument("--batches", default="100,1000", help="publishes in flight, in turn")
    parser.add_argument("--warmup", type=float, default=0.3, help="seconds per way, not counted")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per way")
    args = parser.parse_args()
    import uvloop  # noqa: PLC0415 - a bench dependency, installed by redis_bench.py

    print("result " + json.dumps(uvloop.run(measure(args))), flush=True)


if __name__ == "__main__":
    main()
