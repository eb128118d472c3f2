#!/usr/bin/env python3
"""Stream a chat answer over WS /api/v1/ws (needs the `websockets` package, in AI Core's test extra).

    AICORE_URL=http://127.0.0.1:8000 .venv/bin/python examples/ws_client.py "Tell me a joke."
"""

import json
import os
import sys

from websockets.sync.client import connect

URL = os.environ.get("AICORE_URL", "http://127.0.0.1:8000").replace("http", "ws", 1) + "/api/v1/ws"
KEY = os.environ["AICORE_KEY"]  # e.g. the key in API_KEYS

with connect(URL) as ws:
    ws.send(json.dumps({"type": "auth", "api_key": KEY}))
    ready = json.loads(ws.recv())
    if ready["type"] == "error":
        sys.exit(ready["error"]["message"])
    question = " ".join(sys.argv[1:]) or "Say hello."
    ws.send(json.dumps({"type": "chat", "id": "q1", "messages": [{"role": "user", "content": question}],
                        "max_tokens": 80}))
    while True:
        event = json.loads(ws.recv())
        if event["type"] == "token":
            print(event["text"], end="", flush=True)
        elif event["type"] == "done":
            print(f"\n[{event['model']}, {event['usage']['total_tokens']} tokens, {event['processing_time']}s]")
            break
        else:
            sys.exit(f"\nerror: {event['error']['message']}")
