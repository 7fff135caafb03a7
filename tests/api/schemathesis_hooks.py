"""Schemathesis hooks for tests/api/test_schemathesis.py (loaded by `st run` through
SCHEMATHESIS_HOOKS): one check that keeps positive_data_acceptance strict where the config lets
an operation answer a schema-valid request with 422.

Three operations have rules that no JSON Schema can state, each named in the operation's
description in /openapi.json: rules across fields of a new poll (unique labels and ids, a
deadline in the future, voters that fit the lanes, defences' difficulty <= max_difficulty and
challenge_at <= hold_at), a vote's option (it depends on the poll), and a decision's lane (it
must be one of the poll's). schemathesis.toml lets these three answer 422; this check fails the
run when such a 422 names any other rule, so a rule the schema could state but does not (an
empty title, say) is still a mismatch.
"""

from __future__ import annotations

import re
from typing import Any

import schemathesis
from schemathesis import Case, CheckContext
from schemathesis.core.transport import Response

# (method, path) -> what a 422 to a schema-valid request may say: (field, message) patterns.
CROSS_FIELD_RULES: dict[tuple[str, str], list[tuple[str, str]]] = {
    ("POST", "/v1/polls"): [
        (r"options\[\d+\]\.label", r"duplicate label"),
        (r"options\[\d+\]\.id", r"duplicate id"),
        # The schema states an id's ASCII characters exactly; the rest of the rule (letters,
        # digits and marks of any script, lower case, NFC) is Unicode classes that no pattern
        # both Python and ECMA-262 read can name, so it holds only for a non-ASCII id.
        (r"options\[\d+\]\.id", r"must be 1 to \d+ lower-case letters"),
        (r"closes_at", r"must be in the future|not an RFC 3339 time"),
        (r"lanes", r"expected voters need at least \d+ lanes"),
        (r"defences\.pow\.max_difficulty", r"must be difficulty to \d+"),
        (r"defences\.risk\.challenge_at", r"must be 1 to hold_at"),
        (r"defences\.limits\.[a-z]+", r"needs per_s and burst"),
    ],
    ("POST", "/v1/polls/{poll_id}/votes"): [],  # unknown-option only (no validation-failed)
    ("POST", "/v1/polls/{poll_id}/held/decisions"): [
        (r"entries\[\d+\]\.lane", r"must be 0 to \d+"),
    ],
}

# JSON Schema's integer is a number with no fraction, so 2.0 is one; the server's decoder (and
# defences' fields) want it written as 2, and say so. The document's info says the same.
INTEGRAL_FLOAT = re.compile(r"Expected `int`, got `float`|must be an integer")


@schemathesis.check
def cross_field_rules_only(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """A 422 to a schema-valid request must name a rule the document says it cannot state."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    key = (case.method.upper(), case.path)
    if key not in CROSS_FIELD_RULES:
        return None  # positive_data_acceptance itself fails it: 422 is not allowed there
    problem = response.json()
    if key[1].endswith("/votes") and problem.get("code") == "unknown-option":
        return None
    if INTEGRAL_FLOAT.search(problem.get("detail", "")):
        return None
    for error in problem.get("errors") or []:
        for field, message in CROSS_FIELD_RULES[key]:
            if re.fullmatch(field, error["field"]) and re.search(message, error["message"]):
                if "lower-case" in message and _ascii_option_ids(case):
                    break  # the schema's pattern states the ASCII ids exactly
                return None
    raise AssertionError(
        f"{key[0]} {key[1]} refused schema-valid data for a rule the schema could state: "
        f"{problem.get('detail')}"
    )


def _ascii_option_ids(case: Case[Any]) -> bool:
    body = case.body if isinstance(case.body, dict) else {}
    options = body.get("options")
    ids = [o.get("id") for o in options if isinstance(o, dict)] if isinstance(options, list) else []
    return all(not isinstance(i, str) or i.isascii() for i in ids)
