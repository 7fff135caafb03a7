"""The defences switched off, for every suite that tests something else.

Those suites vote hundreds of times a second from 127.0.0.1 and never solve a challenge, which is
exactly what the defences refuse. conftest puts these variables into the environment of the test
run (so every server a test starts inherits them), and the helpers that build a server's
environment from scratch add them back. tests/defences/ turns each defence on explicitly, through
a poll's own `defences` or its own server environment.
"""

from __future__ import annotations

import json

NO_DEFENCES = {
    "limits": {"address": None, "subnet": None, "voter": None, "poll": None},
    "pow": {"difficulty": 0},
    "risk": {"rules": []},
}

DEFENCES_OFF: dict[str, str] = {
    "TALLY_DEFENCES": json.dumps(NO_DEFENCES),
    # The HTTP edge (gateway/edge.py): no token bucket per address, and room for the load
    # generators' hundreds of connections from 127.0.0.1. Its size limits and deadlines stay on.
    "TALLY_EDGE_RATE": "0",
    "TALLY_MAX_HTTP_CONNECTIONS_PER_IP": "100000",
}
