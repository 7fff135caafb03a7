"""The ledger's files on disk: written by the archiver, read by the gateway (see ledger.layout)."""
