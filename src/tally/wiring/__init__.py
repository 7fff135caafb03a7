"""The composition root: the only package that names the concrete classes Tally is made of.

    store.py       where Valkey is (configured, or embedded), connections, the durability check
    identity.py    the token verifier (JWKS or the dev issuer) and the pseudonym secret
    gateway.py     the gateway role: service, auth, metrics, HTTP app and live side
    aggregator.py  the aggregator role: aggregator and deadline sweep
    archiver.py    the archiver role: archiver and the ledger key
    supervisor.py  the supervisor: duties in a TaskGroup, crash policies, numbered shutdown
    commands.py    `tally serve`, `tally gateway`, `tally aggregator`, `tally archiver`

Import the module you need (`tally.wiring.commands`, ...): this package imports nothing itself,
so `tally token` does not load the server.
"""
