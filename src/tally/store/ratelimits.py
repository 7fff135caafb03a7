"""Rate limits on Valkey (implements ports.RateLimiter): GCRA buckets taken by the `tally_gcra`
function (tally.lua), atomically and all-or-nothing per call, on the server's clock.

One vote request is at most three calls, each on the keys of one hash slot (keys.py):

    address + subnet   the subnet's slot (the address's key carries the subnet's hash tag)
    voter              the voter's own slot
    poll               one lane's slot, for that lane's share of the poll's limit

They leave together in one pipeline (on a cluster: one write per node, all nodes at once), so the
limits cost one round trip, not three. The poll's limit is shared out over its lanes (rate and
burst divided by the lane count) and each request takes from the next lane in turn, so a hot poll
spreads its limit over the cluster as its votes are, and no key is hot.
"""

from __future__ import annotations

import itertools
from typing import Any

from tally.domain.defences import LimitScope, Rate
from tally.domain.errors import StoreUnavailable
from tally.domain.polls import Poll
from tally.ports import Limited, ReplyError, StoreClient
from tally.store import keys

MAX_CACHED_POLLS = 10_000
# The longest a bucket may take to fill (about 31 years): it keeps every TAT (µs since 1970, plus
# this) an exact integer in a Lua double and every PX an integer Valkey accepts. Rates so slow
# that a full burst outlasts it are slowed no further than that.
MAX_FILL_US = 1e15

_FCALL = (b"FCALL", b"tally_gcra")


def gcra_args(rate: Rate) -> tuple[bytes, bytes]:
    """tally_gcra's ARGV pair for one bucket: emission interval (µs) and burst."""
    interval_us = min(1e6 / rate.per_s, MAX_FILL_US / rate.burst)
    return repr(interval_us).encode(), b"%d" % rate.burst


def lane_share(rate: Rate, lanes: int) -> Rate:
    """One lane's part of a poll-wide limit: the rate divided by the lanes, the burst too
    (rounded up, so the lanes together never admit less than the poll's burst)."""
    return Rate(rate.per_s / lanes, -(-rate.burst // lanes))


class _PollBuckets:
    """What the poll limit's calls are built from, computed once per poll (definitions are
    immutable): each lane's key, and the per-lane GCRA arguments."""

    __slots__ = ("args", "lane_keys")

    def __init__(self, poll: Poll, rate: Rate) -> None:
        self.lane_keys = tuple(keys.lane_rate(poll.id, lane).encode() for lane in range(poll.lanes))
        self.args = gcra_args(lane_share(rate, poll.lanes))


class ValkeyRateLimits:
    def __init__(self, client: StoreClient) -> None:
        self._client = client
        self._turn = itertools.count()  # the lane the poll limit takes from next (round robin)
        self._polls: dict[str, _PollBuckets] = {}
        self._args: dict[Rate, tuple[bytes, bytes]] = {}

    async def take(self, poll: Poll, voter: str, address: str, subnet: str) -> Limited | None:
        limits = poll.defences.limits
        commands: list[tuple[bytes, ...]] = []
        scopes: list[tuple[LimitScope, ...]] = []
        if subnet and (limits.address is not None or limits.subnet is not None):
            network_keys: list[bytes] = []
            network_args: list[bytes] = []
            network_scopes: list[LimitScope] = []
            if limits.subnet is not None:
                network_keys.append(keys.rate_subnet(subnet).encode())
                network_args += self._gcra_args(limits.subnet)
                network_scopes.append(LimitScope.SUBNET)
            if limits.address is not None and address:
                network_keys.append(keys.rate_address(subnet, address).encode())
                network_args += self._gcra_args(limits.address)
                network_scopes.append(LimitScope.ADDRESS)
            if network_keys:
                commands.append((*_FCALL, b"%d" % len(network_keys), *network_keys, *network_args))
                scopes.append(tuple(network_scopes))
        if voter and limits.voter is not None:
            commands.append(
                (*_FCALL, b"1", keys.rate_voter(voter).encode(), *self._gcra_args(limits.voter))
            )
            scopes.append((LimitScope.VOTER,))
        if limits.poll is not None:
            buckets = self._poll_buckets(poll, limits.poll)
            lane_key = buckets.lane_keys[next(self._turn) % poll.lanes]
            commands.append((*_FCALL, b"1", lane_key, *buckets.args))
            scopes.append((LimitScope.POLL,))
        if not commands:
            return None
        replies = await self._client.pipeline(commands)
        return _longest_wait(replies, scopes)

    def _gcra_args(self, rate: Rate) -> tuple[bytes, bytes]:
        args = self._args.get(rate)
        if args is None:
            if len(self._args) >= MAX_CACHED_POLLS:
                self._args.clear()
            args = self._args[rate] = gcra_args(rate)
        return args

    def _poll_buckets(self, poll: Poll, rate: Rate) -> _PollBuckets:
        buckets = self._polls.get(poll.id)
        if buckets is None:
            if len(self._polls) >= MAX_CACHED_POLLS:  # bounded: a few keys per poll
                self._polls.clear()
            buckets = self._polls[poll.id] = _PollBuckets(poll, rate)
        return buckets


def _longest_wait(replies: list[Any], scopes: list[tuple[LimitScope, ...]]) -> Limited | None:
    """tally_gcra's replies ({0, 0}, or {retry_after_ms, refusing key}) as the one refusal to
    tell: the longest wait, since a retry any sooner is refused by that limit anyway."""
    worst: Limited | None = None
    for reply, group in zip(replies, scopes, strict=True):
        if isinstance(reply, ReplyError):
            raise StoreUnavailable(f"rate limit function failed: {reply}")
        wait_ms, which = reply
        if which and (worst is None or wait_ms > worst.retry_after_ms):
            worst = Limited(group[which - 1], wait_ms)
    return worst
