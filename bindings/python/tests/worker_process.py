"""A worker process for the signal test: runs `Stuck` until SIGTERM. Arguments: url, options
(JSON), marker path."""

import asyncio
import json
import sys
from pathlib import Path

import aicd
from agents import Stuck


async def main() -> None:
    url, options, marker = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
    client = await aicd.Client.open(url, **options)
    worker = aicd.Worker(client, Stuck(marker), poll_interval=0.05, lease=30.0)
    await worker.run(grace=10.0)
    print("stopped", flush=True)


asyncio.run(main())
