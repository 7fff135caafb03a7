"""``python -m tally.audit``: the audit commands on their own (verify, receipt, export)."""

import sys

from tally.audit.cli import main

sys.exit(main())
