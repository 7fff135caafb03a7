"""The independent auditor: checks a poll's published ledger with its files and public key alone.

It imports only :mod:`tally.ledger` (the format, no I/O), the standard library and orjson, never
a server module, so that it runs, and can be read, apart from the server it audits. Entry points:
:func:`tally.audit.verify.verify`, :func:`tally.audit.receipt.check_receipt`,
:func:`tally.audit.export.export`, and the ``tally audit`` commands in :mod:`tally.audit.cli`.
"""
