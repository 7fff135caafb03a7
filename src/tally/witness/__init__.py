"""``tally witness``: a C2SP tlog-witness for Tally ledgers, run as its own process with its own
key. It cosigns a log's checkpoint only if it is consistent with the last one it cosigned for
that log, so a ledger rewritten after a witness saw it can no longer collect that witness's
cosignature (docs/ledger-format.md, checkpoint witnesses).

Modules: :mod:`~tally.witness.protocol` (the add-checkpoint bytes, pure),
:mod:`~tally.witness.witness` (the rules), :mod:`~tally.witness.state` (the durable per-log
state), :mod:`~tally.witness.server` (HTTP). The cosignature itself is
:mod:`tally.ledger.cosignature`.
"""
