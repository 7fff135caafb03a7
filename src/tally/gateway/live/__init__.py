"""Live results: snapshots pushed to watchers over WebSocket and SSE, and votes over WebSocket.

    gateway.py      LiveGateway: the connections of one process, keepalive sweep, shutdown
    host.py         LiveHost / LiveConnection: the contract between the gateway and a transport
    endpoints.py    LiveEndpoints: the transports built on one gateway (composition root only)
    websocket.py    LiveSocket: the native WebSocket (an asyncio.Protocol)
    uvicorn_ws.py   uvicorn's `ws=` class: /live natively, other paths to uvicorn's ASGI protocol
    asgi_socket.py  AsgiLiveSocket: the same WebSocket over ASGI (fallback)
    sse.py          EventStreams: GET /v1/polls/{poll_id}/events
    votes.py        LiveVoting: auth and vote messages, answered through the shared Voting
    fanout.py       LiveHub: one upstream subscription per watched poll
    limits.py       ConnectionLimits and the refusals the transports share
    snapshot.py     LiveSnapshot: a published document with its frame and event, encoded once
    state.py        WatcherState: a watcher's lifecycle as a transition table

Nothing here imports gateway.py but the composition root: transports depend on host.py only.
"""
