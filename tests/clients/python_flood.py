"""A real peer the gateway must get right: Python's `websockets` flooding one socket.

In a send loop it reads nothing until a write blocks, so a server that drains the flood
and then drops the connection resets it and the client sees 1006. Prints the close code it
received (or "none"). Bounded: at most 200,000 frames.

    python3 tests/clients/python_flood.py ws://127.0.0.1:PORT/twilio
"""
import asyncio
import json
import sys

import websockets


async def main(url):
    sid = "MZ" + "1" * 32
    start = {"event": "start", "streamSid": sid, "start": {"streamSid": sid, "callSid": "CA1",
             "accountSid": "AC1", "tracks": ["inbound"],
             "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}
    media = json.dumps({"event": "media", "streamSid": sid, "media": {"payload": "/w=="}})
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps(start))
        try:
            for _ in range(200_000):
                await ws.send(media)
            await ws.recv()
        except websockets.ConnectionClosed as closed:
            print(closed.rcvd.code if closed.rcvd else "none")
            return
    print("not closed")


asyncio.run(main(sys.argv[1]))
