"""The "verify my vote" page (/verify) in a real Chromium against a real `tally serve --demo`, whose
archiver signs checkpoints every 200 ms: a voter's receipt verifies step by step with WebCrypto
(Ed25519, SHA-256), and every kind of tampering fails at the step that catches it. The page's
checks (static/verify.ledger.js) are compared with `tally audit receipt`'s (tally.audit.receipt)
on the same receipts, so the browser and the auditor agree.

Tampering by the network is done with Playwright's `page.route` (the real answer, one byte
changed); tampering by the voter by editing the receipt the browser holds.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from demo_server import DemoTally, demo_tally
from headless_chromium import checked_page, chromium
from playwright.sync_api import Browser, Page, Route, expect
from screenshots import save_screenshot
from voter_session import sign_in_with_token, stored_receipts

from tally.audit.receipt import check_receipt, parse_receipt
from tally.audit.receipt_admission import published_keys
from tally.audit.source import HttpSource
from tally.client import ApiError, TallyClient
from tally.ledger import note
from tally.ledger.admission import admission_message

TIMEOUT_MS = 10_000
CHECKPOINT_INTERVAL_MS = "200"
STEPS = ("keys", "checkpoint", "inclusion", "admission", "certificate")
OPTIONS = ("Alpha", "Beta", "Gamma")


@dataclass(frozen=True)
class Ledger:
    """A server, a poll of one lane with three votes in a signed checkpoint, and their receipts."""

    server: DemoTally
    poll: dict[str, Any]
    receipts: list[dict[str, Any]]

    @property
    def receipt(self) -> dict[str, Any]:
        """The middle vote's receipt: its inclusion proof has two hashes, one on each side."""
        return self.receipts[1]

    def keys_text(self) -> str:
        return get_text(self.server.url + "/ledger/keys")

    def python_check(self, receipt: dict[str, Any]) -> dict[str, Any]:
        """`tally audit receipt`'s verdict on `receipt`, against the same server."""
        keys = self.keys_text()
        report = check_receipt(
            parse_receipt(json.dumps(receipt).encode()),
            note.Verifier.parse(keys.splitlines()[0]),
            source=HttpSource(f"{self.server.url}/ledger/{receipt['poll_id']}"),
            admission_keys=published_keys(keys),
        )
        return report.to_json()


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (the test's own server)
        text: str = answer.read().decode()
        return text


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    """One server for the module (each test only reads its ledger): a poll of one lane, so that
    three votes are three leaves of one log, all covered by a signed checkpoint, after one of
    size 1."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TALLY_CHECKPOINT_INTERVAL_MS", CHECKPOINT_INTERVAL_MS)
        with demo_tally(tmp_path_factory.mktemp("verify") / "data") as server:
            admin = server.admin()
            poll = admin.post(
                "/v1/polls", {"title": "Verify me", "options": list(OPTIONS), "lanes": 1}
            )
            poll = admin.post(f"/v1/polls/{poll['id']}/open")
            receipts = []
            for number, option in enumerate(("alpha", "beta", "alpha")):
                voter = TallyClient(server.url, server.issuer.mint(f"verify-voter-{number}"))
                answer = voter.post(f"/v1/polls/{poll['id']}/votes", {"option": option})
                receipts.append(answer["receipt"])
                if number == 0:  # so that the lane's history holds a checkpoint of size 1
                    _wait_for_checkpoint(server, poll["id"], receipts[0])
            _wait_for_checkpoint(server, poll["id"], receipts[-1])
            yield Ledger(server, poll, receipts)


def _wait_for_checkpoint(server: DemoTally, poll_id: str, receipt: dict[str, Any]) -> None:
    client = TallyClient(server.url)
    path = f"/v1/polls/{poll_id}/receipts/{receipt['lane']}/{receipt['entry_id']}/proof"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            client.get(path)
            return
        except ApiError:
            time.sleep(0.1)
    raise TimeoutError(f"no checkpoint covers {path} within 20 s")


def _wait_for_certificate(server: DemoTally, poll_id: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            get_text(f"{server.url}/ledger/{poll_id}/certificate")
            return
        except urllib.error.HTTPError:
            assert time.monotonic() < deadline, "no certificate within 20 s"
            time.sleep(0.1)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with checked_page(browser, TIMEOUT_MS, reduced_motion="reduce") as opened:
        yield opened


def keep_receipt(page: Page, receipt: dict[str, Any]) -> None:
    """Put `receipt` where the voting page keeps it (localStorage `tally.receipts`), before any
    page script runs."""
    stored = json.dumps({receipt["poll_id"]: receipt})
    page.add_init_script(f"localStorage.setItem('tally.receipts', {json.dumps(stored)});")


def open_verify(page: Page, ledger: Ledger, receipt: dict[str, Any]) -> None:
    keep_receipt(page, receipt)
    page.goto(f"{ledger.server.url}/verify?poll={receipt['poll_id']}")


def step(page: Page, name: str) -> Any:
    return page.locator(f'#steps li[data-step="{name}"]')


def expect_states(page: Page, *states: str) -> None:
    for name, state in zip(STEPS, states, strict=True):
        expect(step(page, name)).to_have_attribute("data-state", state)


def js_check(page: Page, receipt: dict[str, Any]) -> dict[str, Any]:
    """The page's own verifier, run on `receipt` in the page: its facts or its failure."""
    result: dict[str, Any] = page.evaluate(
        """async (doc) => {
            const m = await import('/static/verify.ledger.js');
            try {
                const facts = await m.verifyReceipt(m.parseReceipt(doc));
                return {verdict: 'ok', checkpoint_size: facts.checkpoint.size,
                        root: m.hex(facts.checkpoint.root), status: facts.record.status,
                        admitted_by: facts.admittedBy ? facts.admittedBy.text : null};
            } catch (error) {
                return {verdict: error instanceof m.NotYet ? 'pending' : 'failed',
                        code: error.code ?? null, step: error.step ?? null};
            }
        }""",
        receipt,
    )
    return result


def test_a_voters_receipt_verifies_and_the_page_says_what_was_proved(
    ledger: Ledger, page: Page
) -> None:
    """The receipt the voting page kept passes all four steps; the page names the option, the
    poll, the entry, the signing key and the gateway, and what it did not prove."""
    open_verify(page, ledger, ledger.receipt)
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "ok")
    expect_states(page, "ok", "ok", "ok", "ok", "none")
    proved = page.locator("#proved")
    expect(proved).to_contain_text(
        "Your vote for “Beta” is in the public ledger of poll “Verify me”"
    )
    expect(proved).to_contain_text("at entry 2 of lane 0, in the tree of 3 entries")
    keys = ledger.keys_text().splitlines()
    ledger_name, gateway_name = keys[0].split("+")[0], keys[1].split("+")[0]
    expect(proved).to_contain_text(f"signed by {ledger_name}/{ledger.poll['id']}/0")
    expect(proved).to_contain_text(f"The gateway's signature ({gateway_name}")
    expect(step(page, "inclusion")).to_contain_text("inclusion proof (2 hashes)")
    expect(page.locator("#not-proved")).to_contain_text("It does not prove the final count")
    expect(page.locator("#not-proved")).to_contain_text("tally audit verify")
    expect(page.locator("#retry")).to_be_hidden()
    page.set_viewport_size({"width": 1280, "height": 1400})  # the whole page, verdict to limits
    save_screenshot(page, "verify")
    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.locator("#verdict")).to_be_in_viewport()  # the verdict comes first on a phone too
    save_screenshot(page, "verify-phone")


def test_the_browser_and_tally_audit_receipt_agree_on_a_genuine_receipt(
    ledger: Ledger, page: Page
) -> None:
    """Same receipt, same server: the page's verifier and the Python auditor find the same
    checkpoint, root, status and admitting gateway key."""
    page.goto(f"{ledger.server.url}/verify")
    for receipt in ledger.receipts:
        python = ledger.python_check(receipt)
        assert python["verdict"] == "ok", python["findings"]
        assert js_check(page, receipt) == {
            "verdict": "ok",
            "checkpoint_size": python["checkpoint_size"],
            "root": python["root"],
            "status": python["status"],
            "admitted_by": python["admitted_by"],
        }


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"option": "gamma"}, "receipt-inconsistent"),
        ({"accepted_at": "2020-01-01T00:00:00.000Z"}, "receipt-inconsistent"),
        ({"leaf_hash": "00" * 32}, "receipt-inconsistent"),
    ],
)
def test_a_tampered_receipt_fails_at_step_3_as_the_auditor_says(
    ledger: Ledger, page: Page, change: dict[str, Any], code: str
) -> None:
    """A receipt edited after the vote (another option, time or leaf hash) no longer rebuilds to
    its leaf hash: step 3 fails, the admission step is not reached, and the Python auditor
    reports the same finding."""
    tampered = {**ledger.receipt, **change}
    open_verify(page, ledger, tampered)
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "failed")
    expect(page.locator("#verdict")).to_contain_text(f"FAILED at step 3 ({code})")
    expect(step(page, "inclusion")).to_contain_text("The receipt was altered")
    expect_states(page, "ok", "ok", "failed", "skipped", "skipped")
    python = ledger.python_check(tampered)
    assert python["verdict"] == "failed"
    assert code in {finding["code"] for finding in python["findings"]}


def test_an_old_receipt_without_pseudonym_is_checked_against_the_logged_record(
    ledger: Ledger, page: Page
) -> None:
    """A receipt without pseudonym and admission (the format before admission signatures) cannot
    be rebuilt: the page checks the published record says what it says instead. Unaltered it
    passes (no admission to check); with another option it fails as the auditor's does."""
    old = {k: v for k, v in ledger.receipt.items() if k not in ("pseudonym", "admission")}
    open_verify(page, ledger, old)
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "ok")
    expect_states(page, "ok", "ok", "ok", "none", "none")
    expect(page.locator("#proved")).to_contain_text("carries no gateway admission signature")

    altered = {**old, "option": "gamma"}
    assert js_check(page, altered) == {
        "verdict": "failed",
        "code": "receipt-mismatch",
        "step": "inclusion",
    }
    python = ledger.python_check(altered)
    assert "receipt-mismatch" in {finding["code"] for finding in python["findings"]}


def _flip_first_proof_byte(route: Route) -> None:
    answer = route.fetch()
    doc = answer.json()
    first = bytearray(base64.b64decode(doc["proof"][0]))
    first[0] ^= 0x01
    doc["proof"][0] = base64.b64encode(bytes(first)).decode()
    route.fulfill(response=answer, json=doc)


def test_a_proof_tampered_on_the_network_fails_at_step_3(ledger: Ledger, page: Page) -> None:
    """One bit of one proof hash changed between server and browser: the proof no longer leads
    to the signed root, and the page says so at step 3 (inclusion-failed)."""
    page.route("**/receipts/*/*/proof", _flip_first_proof_byte)
    open_verify(page, ledger, ledger.receipt)
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "failed")
    expect(page.locator("#verdict")).to_contain_text("FAILED at step 3 (inclusion-failed)")
    expect(step(page, "inclusion")).to_contain_text("does not lead to the signed root")
    expect_states(page, "ok", "ok", "failed", "skipped", "skipped")


def test_a_leaf_tampered_on_the_network_fails_at_step_3(ledger: Ledger, page: Page) -> None:
    """The published record swapped for another vote's: it does not hash to the receipt's leaf."""
    other = ledger.receipts[0]

    def swap_leaf(route: Route) -> None:
        answer = route.fetch()
        doc = answer.json()
        real = TallyClient(ledger.server.url).get(
            f"/v1/polls/{other['poll_id']}/receipts/0/{other['entry_id']}/proof"
        )
        doc["leaf"] = real["leaf"]
        route.fulfill(response=answer, json=doc)

    page.route("**/receipts/*/*/proof", swap_leaf)
    open_verify(page, ledger, ledger.receipt)
    expect(page.locator("#verdict")).to_contain_text("FAILED at step 3 (leaf-hash-mismatch)")


def test_a_checkpoint_under_the_wrong_key_fails_at_step_2(ledger: Ledger, page: Page) -> None:
    """/ledger/keys answered with another Ed25519 key under the ledger's name (a different key
    ID): the lane's checkpoint carries no valid signature by it, and step 2 fails."""
    name = ledger.keys_text().splitlines()[0].split("+")[0]
    _, impostor = note.generate_key(name)

    def other_key(route: Route) -> None:
        real = route.fetch().text().splitlines()
        route.fulfill(body="\n".join([impostor, *real[1:]]) + "\n", content_type="text/plain")

    page.route("**/ledger/keys", other_key)
    open_verify(page, ledger, ledger.receipt)
    expect(page.locator("#verdict")).to_contain_text("FAILED at step 2 (bad-signature)")
    expect(step(page, "checkpoint")).to_contain_text("does not verify under")
    expect_states(page, "ok", "failed", "skipped", "skipped", "skipped")


def test_a_checkpoint_with_a_broken_signature_fails_at_step_2(ledger: Ledger, page: Page) -> None:
    """The right key, but one byte of the checkpoint's root changed on the way."""

    def bend_root(route: Route) -> None:
        lines = route.fetch().text().split("\n")
        root = bytearray(base64.b64decode(lines[2]))
        root[5] ^= 0x80
        lines[2] = base64.b64encode(bytes(root)).decode()
        route.fulfill(body="\n".join(lines), content_type="text/plain")

    page.route("**/ledger/*/0/checkpoint", bend_root)
    open_verify(page, ledger, ledger.receipt)
    expect(page.locator("#verdict")).to_contain_text("FAILED at step 2 (bad-signature)")
    expect(step(page, "checkpoint")).to_contain_text("does not verify")


def test_an_admission_key_not_published_fails_at_step_4(ledger: Ledger, page: Page) -> None:
    """/ledger/keys lists another gateway key instead of the one that signed the vote: the
    receipt's admission is under a key ID the server does not publish."""
    keys = ledger.keys_text().splitlines()
    gateway = keys[1].split()
    _, other = note.generate_key(gateway[0].split("+")[0])

    def other_gateway(route: Route) -> None:
        body = f"{keys[0]}\n{other} {gateway[1]} {gateway[2]}\n"
        route.fulfill(body=body, content_type="text/plain")

    page.route("**/ledger/keys", other_gateway)
    open_verify(page, ledger, ledger.receipt)
    expect(page.locator("#verdict")).to_contain_text("FAILED at step 4 (admission-unknown-key)")
    expect_states(page, "ok", "ok", "ok", "failed", "skipped")


def test_not_yet_checkpointed_says_so_and_check_again_passes_later(
    ledger: Ledger, page: Page
) -> None:
    """While the lane's latest checkpoint is older than the vote (served here: the genuine signed
    checkpoint of size 1, from the lane's history), the page says "not yet" and offers to check
    again; once the checkpoint covers the vote, "Check again" passes."""
    poll_id = ledger.poll["id"]
    older = get_text(f"{ledger.server.url}/ledger/{poll_id}/0/checkpoints/1")
    page.route(
        "**/ledger/*/0/checkpoint",
        lambda route: route.fulfill(body=older, content_type="text/plain"),
    )
    open_verify(page, ledger, ledger.receipt)
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "waiting")
    expect(page.locator("#verdict")).to_contain_text("Not yet in a checkpoint")
    expect_states(page, "ok", "waiting", "skipped", "skipped", "skipped")
    page.unroute("**/ledger/*/0/checkpoint")
    page.get_by_role("button", name="Check again").click()
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "ok")


def test_without_ed25519_the_page_says_it_cannot_verify(ledger: Ledger, page: Page) -> None:
    """A browser whose WebCrypto lacks Ed25519 (simulated by refusing the import as such a
    browser does) is told so plainly; no step passes on a signature it did not check."""
    page.add_init_script(
        """(() => {
            const importKey = SubtleCrypto.prototype.importKey;
            SubtleCrypto.prototype.importKey = function (format, data, algorithm, ...rest) {
                if ((algorithm.name || algorithm) === 'Ed25519') {
                    return Promise.reject(new DOMException('Unrecognized name.', 'NotSupportedError'));
                }
                return importKey.call(this, format, data, algorithm, ...rest);
            };
        })();"""
    )
    open_verify(page, ledger, ledger.receipt)
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "unsupported")
    expect(page.locator("#verdict")).to_contain_text("has no Ed25519")
    expect_states(page, "ok", "unsupported", "skipped", "skipped", "skipped")


def test_a_pasted_receipt_or_a_receipt_file_is_checked(
    ledger: Ledger, page: Page, tmp_path: Path
) -> None:
    """Without a stored receipt the page asks for one: a pasted vote answer ({"receipt": ...})
    and a downloaded receipt file both verify; a paste that is no receipt says why."""
    page.goto(f"{ledger.server.url}/verify?poll={ledger.poll['id']}")
    expect(page.locator("#source")).to_contain_text("holds no receipt")
    page.locator("#receipt-text").fill('{"poll_id": "x"}')
    page.get_by_role("button", name="Check this receipt").click()
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "invalid")
    expect(page.locator("#verdict")).to_contain_text("the receipt lacks lane, entry_id")

    page.locator("#receipt-text").fill(json.dumps({"receipt": ledger.receipts[2]}))
    page.get_by_role("button", name="Check this receipt").click()
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "ok")
    expect(page.locator("#proved")).to_contain_text("Your vote for “Alpha”")

    page.locator("#receipt-text").fill("")
    saved = tmp_path / f"tally-receipt-{ledger.poll['id']}.json"
    saved.write_text(json.dumps(ledger.receipts[0]))
    page.locator("#receipt-file").set_input_files(str(saved))
    expect(page.locator("#source")).to_contain_text(f"the receipt file {saved.name}")
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "ok")
    expect(page.locator("#proved")).to_contain_text("at entry 1 of lane 0")


def test_the_pages_record_and_admission_bytes_match_the_python_ledger_code(
    ledger: Ledger, page: Page
) -> None:
    """The browser rebuilds a receipt's vote record and admission message byte for byte as
    tally.ledger does, for accepted, held, released and voided receipts, non-ASCII ids and an
    unsigned (version 0x01) record: the leaf hashes and messages are compared, not assumed."""
    page.goto(f"{ledger.server.url}/verify")
    base = ledger.receipt
    variants = [
        base,
        {**base, "status": "held"},
        {**base, "status": "released"},
        {**base, "status": "voided"},
        {**base, "option": "größe", "poll_id": "ümlaut-poll"},
        {k: v for k, v in base.items() if k != "admission"},
    ]
    for doc in variants:
        parsed = parse_receipt(json.dumps(doc).encode())
        rebuilt = parsed.rebuilt_leaf_hash()
        assert rebuilt is not None
        browser = page.evaluate(
            """async (doc) => {
                const m = await import('/static/verify.ledger.js');
                const r = m.parseReceipt(doc);
                return {leaf: m.hex(await m.leafHash(m.receiptRecord(r))),
                        message: r.admission ? m.hex(m.admissionMessage(r)) : null};
            }""",
            doc,
        )
        expected_message = None
        if parsed.admission is not None:
            assert parsed.pseudonym is not None
            expected_message = admission_message(
                parsed.poll_id,
                parsed.pseudonym,
                parsed.option,
                parsed.record_status,
                parsed.admission.admitted_ms,
                parsed.admission.key_id,
            ).hex()
        assert browser == {"leaf": rebuilt.hex(), "message": expected_message}, doc


def test_a_held_vote_verifies_and_then_shows_the_reviewers_proved_decision(
    ledger: Ledger, page: Page
) -> None:
    """A vote held for review verifies as held with no decision yet; once a reviewer releases
    it, the page finds the review record in the lane's bundles, proves it against the signed
    root, and says the vote counts. A receipt claiming "voided" then fails at step 3, as the
    Python auditor's does, and the two agree on every status."""
    fresh = {"signal": "token_age_s", "comparison": "below", "value": 3600, "score": 100,
             "reason": "fresh-token"}  # fmt: skip
    admin = ledger.server.admin()
    poll = admin.post(
        "/v1/polls",
        {
            "title": "Held",
            "options": ["Yes", "No"],
            "lanes": 1,
            "defences": {"risk": {"rules": [fresh], "challenge_at": 50, "hold_at": 100}},
        },
    )
    admin.post(f"/v1/polls/{poll['id']}/open")
    voter = TallyClient(ledger.server.url, ledger.server.issuer.mint("verify-held-voter"))
    held = voter.post(f"/v1/polls/{poll['id']}/votes", {"option": "yes"})["receipt"]
    assert held["status"] == "held"
    _wait_for_checkpoint(ledger.server, poll["id"], held)

    open_verify(page, ledger, held)
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "ok")
    expect(page.locator("#status-meaning")).to_contain_text("holds no decision on it yet")
    assert ledger.python_check(held)["status"] == "held"

    admin.post(
        f"/v1/polls/{poll['id']}/held/decisions",
        {"decision": "release", "entries": [{"lane": 0, "entry_id": held["entry_id"]}]},
    )
    _wait_for_checkpoint(ledger.server, poll["id"], {**held, "entry_id": 2})
    released = {**held, "status": "released"}
    page.locator("#receipt-text").fill(json.dumps(released))  # the receipt, asked again later
    page.get_by_role("button", name="Check this receipt").click()
    expect(page.locator("#source")).to_contain_text("the receipt you pasted")
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "ok")
    expect(page.locator("#status-meaning")).to_contain_text("a reviewer released it: it counts")
    expect(page.locator("#status-meaning")).to_contain_text("entry 2 of lane 0")
    python = ledger.python_check(released)
    assert (python["verdict"], python["status"]) == ("ok", "released")

    claimed = {**held, "status": "voided"}
    assert js_check(page, claimed) == {
        "verdict": "failed",
        "code": "receipt-mismatch",
        "step": "inclusion",
    }
    python = ledger.python_check(claimed)
    assert "receipt-mismatch" in {finding["code"] for finding in python["findings"]}


def test_on_a_certified_poll_the_vote_is_tied_to_the_result_or_missing_from_it(
    ledger: Ledger, page: Page
) -> None:
    """Once the poll is closed and certified, step 5 checks the signed result certificate closes
    the lane at the very tree the vote was proved in, and shows the certified counts. A receipt
    whose entry lies beyond the certified final log is missing from it (not "try later"), as
    `tally audit receipt` says."""
    admin = ledger.server.admin()
    poll = admin.post("/v1/polls", {"title": "Closed", "options": ["Up", "Down"], "lanes": 1})
    admin.post(f"/v1/polls/{poll['id']}/open")
    receipts = []
    for n, option in enumerate(("up", "down", "up")):
        voter = TallyClient(ledger.server.url, ledger.server.issuer.mint(f"verify-closed-{n}"))
        receipts.append(voter.post(f"/v1/polls/{poll['id']}/votes", {"option": option})["receipt"])
        if n == 0:  # so that the lane's history holds a checkpoint of size 1
            _wait_for_checkpoint(ledger.server, poll["id"], receipts[0])
    admin.post(f"/v1/polls/{poll['id']}/close")
    _wait_for_certificate(ledger.server, poll["id"])

    open_verify(page, ledger, receipts[1])
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "ok")
    expect_states(page, "ok", "ok", "ok", "ok", "ok")
    expect(step(page, "certificate")).to_contain_text("certifies up 2, down 1 (total 3)")
    expect(page.locator("#proved")).to_contain_text("result certificate closes lane 0")

    beyond = {**receipts[2], "entry_id": 7}
    assert js_check(page, beyond) == {
        "verdict": "failed",
        "code": "missing-from-final-log",
        "step": "checkpoint",
    }
    python = ledger.python_check(beyond)
    assert python["verdict"] == "missing"


def test_a_stale_view_of_a_certified_lane_fails_at_step_5(ledger: Ledger, page: Page) -> None:
    """A server (or the network) that shows the voter an older, genuinely signed checkpoint of
    the lane, with a valid proof in it, passes steps 1-4; but the certificate closes the lane at
    a larger tree, so step 5 fails: the voter is not shown the tree that was counted."""
    admin = ledger.server.admin()
    poll = admin.post("/v1/polls", {"title": "Stale", "options": ["Up", "Down"], "lanes": 1})
    admin.post(f"/v1/polls/{poll['id']}/open")
    receipts = []
    for n, option in enumerate(("up", "down")):
        voter = TallyClient(ledger.server.url, ledger.server.issuer.mint(f"verify-stale-{n}"))
        receipts.append(voter.post(f"/v1/polls/{poll['id']}/votes", {"option": option})["receipt"])
        _wait_for_checkpoint(ledger.server, poll["id"], receipts[-1])
    admin.post(f"/v1/polls/{poll['id']}/close")
    _wait_for_certificate(ledger.server, poll["id"])
    older = get_text(f"{ledger.server.url}/ledger/{poll['id']}/0/checkpoints/1")

    def stale_proof(route: Route) -> None:  # leaf 0 alone is the whole tree of size 1
        answer = route.fetch()
        route.fulfill(response=answer, json={**answer.json(), "checkpoint": older, "proof": []})

    page.route(
        "**/ledger/*/0/checkpoint",
        lambda route: route.fulfill(body=older, content_type="text/plain"),
    )
    page.route("**/receipts/*/*/proof", stale_proof)
    open_verify(page, ledger, receipts[0])
    expect(page.locator("#verdict")).to_contain_text("FAILED at step 5 (certificate-mismatch)")
    expect_states(page, "ok", "ok", "ok", "ok", "failed")
    expect(step(page, "certificate")).to_contain_text("closes lane 0 at 2 leaves")


def test_from_the_voting_page_verify_my_vote_passes(ledger: Ledger, page: Page) -> None:
    """The whole way a voter goes: vote on the voting page, follow its "Verify my vote" link, and
    the receipt the page kept verifies, naming the option voted for."""
    admin = ledger.server.admin()
    poll = admin.post("/v1/polls", {"title": "End to end", "options": list(OPTIONS), "lanes": 1})
    admin.post(f"/v1/polls/{poll['id']}/open")
    token = ledger.server.issuer.mint("verify-page-voter")
    sign_in_with_token(page, f"{ledger.server.url}/?poll={poll['id']}", token, "verify-page-voter")
    page.get_by_role("button", name="Vote for Gamma").click()
    expect(page.locator("#outcome")).to_have_attribute("data-kind", "accepted")
    receipt = stored_receipts(page)[poll["id"]]
    assert isinstance(receipt, dict)
    _wait_for_checkpoint(ledger.server, poll["id"], receipt)

    page.get_by_role("link", name="Verify my vote").click()
    expect(page).to_have_url(f"{ledger.server.url}/verify?poll={poll['id']}")
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "ok")
    expect(page.locator("#proved")).to_contain_text("Your vote for “Gamma” is in the public ledger")


def test_the_verify_page_is_served_like_the_voting_page(ledger: Ledger) -> None:
    """/verify is a page of its own with the voting page's strict headers (no inline script, no
    other origin): the checks run only from the server's own modules."""
    with (
        urllib.request.urlopen(f"{ledger.server.url}/verify", timeout=10) as verify,  # noqa: S310
        urllib.request.urlopen(f"{ledger.server.url}/", timeout=10) as index,  # noqa: S310
    ):
        body = verify.read().decode()
        assert verify.headers["Content-Type"] == "text/html; charset=utf-8"
        for header in ("Content-Security-Policy", "Referrer-Policy", "Cache-Control"):
            assert verify.headers[header] == index.headers[header], header
    assert "script-src 'self'" in verify.headers["Content-Security-Policy"]
    assert '<script type="module" src="/static/verify.js"></script>' in body


def test_no_answer_from_the_server_waits_instead_of_failing(ledger: Ledger, page: Page) -> None:
    """A request that gets no answer (here: the proof request aborted, as when offline) proves
    nothing either way: step 3 waits with a plain reason, and "Check again" passes once the
    server answers."""
    page.route("**/receipts/*/*/proof", lambda route: route.abort("internetdisconnected"))
    open_verify(page, ledger, ledger.receipt)
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "waiting")
    expect(page.locator("#verdict")).to_contain_text("no answer from the server")
    expect_states(page, "ok", "ok", "waiting", "skipped", "skipped")
    page.unroute("**/receipts/*/*/proof")
    page.get_by_role("button", name="Check again").click()
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "ok")


def test_a_witness_cosignature_line_is_ignored_as_signed_notes_require(
    ledger: Ledger, page: Page
) -> None:
    """A checkpoint may carry witnesses' cosignature lines (docs/ledger-format.md §4.5): lines by
    keys the page does not know are ignored, so a cosigned checkpoint verifies as before."""
    cosignature = base64.b64encode(bytes(range(76))).decode()  # key ID, timestamp, signature
    served: list[str] = []

    def cosigned(route: Route) -> None:
        note_text = route.fetch().text()
        served.append(note_text)
        route.fulfill(
            body=f"{note_text}\u2014 witness.example/w1 {cosignature}\n",
            content_type="text/plain; charset=utf-8",
        )

    page.route("**/ledger/*/0/checkpoint", cosigned)
    open_verify(page, ledger, ledger.receipt)
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", "ok")
    assert len(served) == 1  # the page checked the cosigned note
