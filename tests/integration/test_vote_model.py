"""The vote path against a pure model: random interleavings of votes, repeats, opens, closes and
deadlines, run through the real service stack on a real valkey-server, agree with a few lines of
plain Python that state the rules.

The rules the model states:
- an unknown option is refused before anything else;
- a voter who already voted gets AlreadyVoted with the receipt of their first vote, whatever the
  poll's state (the duplicate check comes before the state check, so a retry after a close still
  gets its receipt);
- otherwise a vote on a poll that is not open (or open but past its deadline, by Valkey's clock)
  gets NotOpen, and one on an open poll is Accepted with the lane's next entry id (1, 2, 3, ...);
- counts are the number of distinct accepted voters per option;
- draft -> open, draft -> closed and open -> closed are the only legal moves, and a poll whose
  deadline has passed cannot be opened.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conftest import StoreUnderTest
from tally.domain.errors import IllegalTransition
from tally.domain.polls import OptionSpec, Poll, PollState
from tally.domain.pseudonyms import lane_of, pseudonym
from tally.domain.votes import Accepted, AlreadyVoted, NotOpen, Receipt, UnknownOption, VoteOutcome
from tally.service import NewPoll, Voter, VotingService
from tally.store.polls import ValkeyPolls
from tally.store.votes import ValkeyBallotBox

T = TypeVar("T")

ISSUER = "https://idp.model.test"
SECRET = b"model-pseudonym-secret-32-bytes!"
SUBJECTS = ("ana", "ben", "cy", "dee", "eli", "fay")
OPTION_IDS = ("a", "b", "c")
UNKNOWN_OPTION = "zz"
MAX_DEADLINE_POLLS = 3

# The lifecycle as the issue states it, written out rather than imported from the code under test.
LEGAL_MOVES = frozenset(
    {
        (PollState.DRAFT, PollState.OPEN),
        (PollState.DRAFT, PollState.CLOSED),
        (PollState.OPEN, PollState.CLOSED),
    }
)

subjects = st.sampled_from(SUBJECTS)
# An index into the poll's options; one past the last stands for an option the poll lacks.
choices = st.integers(min_value=0, max_value=len(OPTION_IDS))
lane_counts = st.sampled_from([1, 2, 4])
# Short deadlines pass between steps on their own; longer ones wait for sleep_past_deadlines.
deadlines_ahead_ms = st.integers(min_value=20, max_value=300)


def now_ms() -> int:
    """The wall clock in ms; Valkey's TIME reads the same clock on this machine."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Window:
    """When a call ran: the server's clock read anything from `before` to `after`."""

    before: int
    after: int

    def passed(self, deadline: int | None) -> bool | None:
        """Whether `deadline` had passed during the call; None when the call straddled it."""
        if deadline is None or self.after < deadline:
            return False
        if self.before >= deadline:
            return True
        return None


@dataclass(eq=False)
class PollModel:
    """What a poll should hold: its stored state and the first receipt of every voter."""

    definition: Poll
    options: tuple[str, ...]
    state: PollState = PollState.DRAFT
    waited_for: bool = False  # sleep_past_deadlines has slept past this poll's deadline
    receipts: dict[str, Receipt] = field(default_factory=dict)
    last_entry: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def id(self) -> str:
        return self.definition.id

    @property
    def lanes(self) -> int:
        return self.definition.lanes

    @property
    def closes_at_ms(self) -> int | None:
        return self.definition.closes_at_ms

    def __repr__(self) -> str:
        return f"PollModel({self.id!r}, {self.state.value}, lanes={self.lanes})"

    def option(self, choice: int) -> str:
        return self.options[choice] if choice < len(self.options) else UNKNOWN_OPTION

    def counts(self) -> dict[str, int]:
        accepted = Counter(receipt.option for receipt in self.receipts.values())
        return {option: accepted[option] for option in self.options}

    def effective_states(self, window: Window) -> set[PollState]:
        """The states the service may report during `window` (two if a deadline fell inside)."""
        if self.state is not PollState.OPEN:
            return {self.state}
        passed = self.passed(window)
        if passed is None:
            return {PollState.OPEN, PollState.CLOSED}
        return {PollState.CLOSED if passed else PollState.OPEN}

    def passed(self, window: Window) -> bool | None:
        return window.passed(self.closes_at_ms)


class AcceptOrMaybeClosed:
    """The model's verdict for a vote the poll should take, unless its deadline fell mid-call."""

    def __init__(self, *, may_be_closed: bool) -> None:
        self.may_be_closed = may_be_closed


def describe(outcome: VoteOutcome, poll: PollModel) -> str:
    """A label for Hypothesis' statistics, so a run shows which paths it exercised."""
    if isinstance(outcome, NotOpen) and poll.state is PollState.OPEN:
        return "vote: NotOpen (deadline passed)"
    return f"vote: {type(outcome).__name__}"


def expected_outcome(
    poll: PollModel, subject: str, option: str, window: Window
) -> VoteOutcome | AcceptOrMaybeClosed:
    """The model of the vote function, in the order it checks things."""
    if option not in poll.options:
        # The refusal lists the poll's options, so a voter can pick a valid one.
        return UnknownOption(option, poll.definition.options)
    if subject in poll.receipts:
        return AlreadyVoted(poll.receipts[subject])
    if poll.state is not PollState.OPEN:
        return NotOpen(poll.state)
    passed = poll.passed(window)
    if passed:
        return NotOpen(PollState.CLOSED)
    return AcceptOrMaybeClosed(may_be_closed=passed is None)


class VoteModel(RuleBasedStateMachine):
    """Drives VotingService on a real Valkey and compares every answer with PollModel."""

    server: ClassVar[StoreUnderTest]
    polls: Bundle[PollModel] = Bundle("polls")
    deadline_polls: Bundle[PollModel] = Bundle("deadline_polls")
    # Half of the votes and moves go to deadline polls, so their expiry is exercised often.
    any_poll = st.one_of(polls, deadline_polls)

    def __init__(self) -> None:
        super().__init__()
        # A private loop per machine: Hypothesis runs rules synchronously.
        self.loop = asyncio.new_event_loop()
        self.client = self.server.client()
        self.store = ValkeyPolls(self.client)
        self.service = VotingService(
            self.store, ValkeyBallotBox(self.client), pseudonym_secret=SECRET
        )
        self.models: list[PollModel] = []

    def teardown(self) -> None:
        try:
            self.loop.run_until_complete(self.client.close())
        finally:
            self.loop.close()

    def run(self, call: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(call)

    def timed(self, call: Coroutine[Any, Any, T]) -> tuple[T, Window]:
        before = now_ms()
        result = self.run(call)
        return result, Window(before, now_ms())

    # creating polls

    def create(
        self, lanes: int, n_options: int, closes_at_ms: int | None, *, open_it: bool
    ) -> PollModel:
        options = OPTION_IDS[:n_options]
        spec = NewPoll(
            title="model poll",
            options=[OptionSpec(label=o.upper(), id=o) for o in options],
            lanes=lanes,
            closes_at_ms=closes_at_ms,
        )
        poll = self.run(self.service.create_poll(spec))
        assert poll.state is PollState.DRAFT
        model = PollModel(poll, options)
        self.models.append(model)
        if open_it:
            self.move(model, PollState.OPEN)
        return model

    @initialize(target=polls, lanes=lane_counts)
    def an_open_poll(self, lanes: int) -> PollModel:
        return self.create(lanes, len(OPTION_IDS), None, open_it=True)

    @initialize(target=deadline_polls, lanes=lane_counts, ahead_ms=deadlines_ahead_ms)
    def a_deadline_poll_opened_at_once(self, lanes: int, ahead_ms: int) -> PollModel:
        return self.create(lanes, len(OPTION_IDS), now_ms() + ahead_ms, open_it=True)

    @rule(
        target=polls,
        lanes=lane_counts,
        n_options=st.integers(2, len(OPTION_IDS)),
        open_it=st.booleans(),
    )
    def create_poll(self, lanes: int, n_options: int, open_it: bool) -> PollModel:
        return self.create(lanes, n_options, None, open_it=open_it)

    @precondition(
        lambda self: sum(m.closes_at_ms is not None for m in self.models) < MAX_DEADLINE_POLLS
    )
    @rule(
        target=deadline_polls, lanes=lane_counts, ahead_ms=deadlines_ahead_ms, open_it=st.booleans()
    )
    def create_poll_with_deadline(self, lanes: int, ahead_ms: int, open_it: bool) -> PollModel:
        return self.create(lanes, len(OPTION_IDS), now_ms() + ahead_ms, open_it=open_it)

    # lifecycle

    @rule(poll=any_poll, to=st.sampled_from([PollState.OPEN, PollState.CLOSED]))
    def move(self, poll: PollModel, to: PollState) -> None:
        call = self.service.open_poll if to is PollState.OPEN else self.service.close_poll
        moved: Poll | None = None
        refused: IllegalTransition | None = None
        before = now_ms()
        try:
            moved = self.run(call(poll.id))
        except IllegalTransition as error:
            refused = error
        window = Window(before, now_ms())
        legal = (poll.state, to) in LEGAL_MOVES
        # A poll past its deadline cannot be opened (None: the deadline fell during the call).
        too_late = poll.passed(window) if to is PollState.OPEN else False
        if moved is not None:
            assert legal, f"{poll.state} -> {to} was allowed"
            assert not too_late, f"{poll.id} opened after its deadline"
            assert moved.state is to
            poll.state = to
        else:
            assert refused is not None
            assert not legal or too_late is not False, refused
            assert (refused.current, refused.target) == (poll.state, to)

    # Preconditions must not read the clock: Hypothesis needs the same rules enabled on replay.
    @precondition(lambda self: any(not m.waited_for for m in self.models if m.closes_at_ms))
    @rule()
    def sleep_past_deadlines(self) -> None:
        deadlines = [m.closes_at_ms for m in self.models if m.closes_at_ms]
        time.sleep(max(0, max(deadlines) - now_ms() + 2) / 1000)
        for model in self.models:
            model.waited_for = True

    @rule()
    def sweep_expired(self) -> None:
        closed, window = self.timed(self.service.close_expired())
        for model in self.models:
            if model.id in closed:
                assert model.state is PollState.OPEN
                assert model.passed(window) is not False
                model.state = PollState.CLOSED
            else:
                assert model.state is not PollState.OPEN or model.passed(window) is not True

    # voting

    @rule(poll=any_poll, subject=subjects, choice=choices)
    def vote(self, poll: PollModel, subject: str, choice: int) -> None:
        option = poll.option(choice)
        outcome, window = self.timed(self.service.vote(poll.id, Voter(ISSUER, subject), option))
        expected = expected_outcome(poll, subject, option, window)
        event(describe(outcome, poll))
        if not isinstance(expected, AcceptOrMaybeClosed):
            assert outcome == expected
            return
        if expected.may_be_closed and outcome == NotOpen(PollState.CLOSED):
            return
        assert isinstance(outcome, Accepted), outcome
        self.check_new_receipt(poll, subject, option, outcome.receipt, window)
        assert outcome.receipt.entry_id == poll.last_entry[outcome.receipt.lane] + 1
        poll.last_entry[outcome.receipt.lane] += 1
        poll.receipts[subject] = outcome.receipt

    @rule(
        poll=any_poll,
        ballots=st.lists(st.tuples(subjects, choices), min_size=1, max_size=6),
        again=choices,
    )
    def vote_concurrently(
        self, poll: PollModel, ballots: list[tuple[str, int]], again: int
    ) -> None:
        """Several votes in one pipelined write, the first voter voting twice."""
        ballots = [*ballots, (ballots[0][0], again)]
        casts = [(subject, poll.option(choice)) for subject, choice in ballots]

        async def cast_all() -> list[VoteOutcome]:
            votes = (self.service.vote(poll.id, Voter(ISSUER, s), o) for s, o in casts)
            return list(await asyncio.gather(*votes))

        outcomes, window = self.timed(cast_all())
        by_subject: dict[str, list[tuple[str, VoteOutcome]]] = defaultdict(list)
        for (subject, option), outcome in zip(casts, outcomes, strict=True):
            event(describe(outcome, poll))
            by_subject[subject].append((option, outcome))
        accepted: list[Receipt] = []
        for subject, tries in by_subject.items():
            receipt = self.check_one_voters_tries(poll, subject, tries, window)
            if receipt is not None:
                accepted.append(receipt)
        for lane in {r.lane for r in accepted}:
            entries = sorted(r.entry_id for r in accepted if r.lane == lane)
            first = poll.last_entry[lane] + 1
            assert entries == list(range(first, first + len(entries)))
            poll.last_entry[lane] = entries[-1]

    def check_one_voters_tries(
        self, poll: PollModel, subject: str, tries: list[tuple[str, VoteOutcome]], window: Window
    ) -> Receipt | None:
        """One voter's concurrent votes: at most one Accepted, every repeat sees its receipt.
        Returns the receipt of a newly accepted vote (recorded in the model)."""
        known = []
        for option, outcome in tries:
            if option in poll.options:
                known.append((option, outcome))
            else:
                assert outcome == UnknownOption(option, poll.definition.options)
        if not known:
            return None
        expected = expected_outcome(poll, subject, known[0][0], window)
        if not isinstance(expected, AcceptOrMaybeClosed):
            assert [outcome for _, outcome in known] == [expected] * len(known)
            return None
        if expected.may_be_closed and all(o == NotOpen(PollState.CLOSED) for _, o in known):
            return None
        winners = [(opt, out) for opt, out in known if isinstance(out, Accepted)]
        assert len(winners) == 1, known
        option, outcome = winners[0]
        assert isinstance(outcome, Accepted)
        receipt = outcome.receipt
        self.check_new_receipt(poll, subject, option, receipt, window)
        assert [out for _, out in known if out is not outcome] == [AlreadyVoted(receipt)] * (
            len(known) - 1
        )
        poll.receipts[subject] = receipt
        return receipt

    def check_new_receipt(
        self, poll: PollModel, subject: str, option: str, receipt: Receipt, window: Window
    ) -> None:
        lane = lane_of(pseudonym(SECRET, poll.id, ISSUER, subject), poll.lanes)
        assert (receipt.poll_id, receipt.lane, receipt.option) == (poll.id, lane, option)
        assert window.before <= receipt.accepted_at_ms <= window.after

    # what every step must leave true

    @invariant()
    def results_states_and_lanes_match_the_model(self) -> None:
        async def read_all() -> list[Any]:
            reads = []
            for model in self.models:
                reads += [
                    self.service.results(model.id),
                    self.service.get_poll(model.id),
                    self.store.lane_states(model.definition),
                ]
            return list(await asyncio.gather(*reads))

        replies, window = self.timed(read_all())
        for i, model in enumerate(self.models):
            results, poll, lane_states = replies[3 * i : 3 * i + 3]
            assert results.counts == model.counts()
            assert results.total == len(model.receipts)
            assert results.state in model.effective_states(window)
            assert poll.state in model.effective_states(window)
            assert lane_states == [model.state] * model.lanes


def test_votes_and_lifecycle_agree_with_the_model(store_server: StoreUnderTest) -> None:
    """Random interleavings of votes, repeats, moves and deadlines match the pure model."""

    class OnTheTestServer(VoteModel):
        server = store_server

    run_state_machine_as_test(
        OnTheTestServer,
        settings=settings(max_examples=40, stateful_step_count=30, deadline=None),
    )
