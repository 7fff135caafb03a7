"""Rate limits on Valkey (implements ports.RateLimiter): GCRA buckets taken by the `tally_gcra`
function (tally.lua), on the server's clock, in groups that are each atomic and all-or-nothing.

One vote request takes at most three groups, each on the keys of one hash slot (keys.py):

    address + subnet   the subnet's slot (the address's key carries the subnet's hash tag)
    voter              the voter's own slot
    poll               one lane's slot, for that lane's share of the poll's limit

On a cluster each group is a call of its own and the calls leave together in one pipeline (one
write per node, all nodes at once): one round trip, not three. On one node the groups travel in
ONE call (`one_call`: no slots to respect there), which the function treats exactly as the
separate calls, group by group (one call, not three, took the check from ~206k to ~160k
instructions per vote under callgrind).
The poll's limit is shared out over its lanes (rate and burst divided by the lane count) and each
request takes from the next lane in turn, so a hot poll spreads its limit over the cluster as its
votes are, and no key is hot.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, NamedTuple

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


class _Bucket(NamedTuple):
    scope: LimitScope
    key: bytes
    spec: bytes  # gcra_spec of its rate


def gcra_spec(rate: Rate) -> bytes:
    """A bucket's part of tally_gcra's ARGV, less its group: emission interval (µs), burst."""
    interval_us = min(1e6 / rate.per_s, MAX_FILL_US / rate.burst)
    return b"%b %d" % (repr(interval_us).encode(), rate.burst)


def gcra_command(groups: Sequence[Sequence[_Bucket]]) -> tuple[bytes, ...]:
    """One FCALL tally_gcra taking these groups (numbered in order)."""
    buckets = [b for group in groups for b in group]
    spec = b" ".join(b"%b %d" % (b.spec, n) for n, group in enumerate(groups, 1) for b in group)
    return (*_FCALL, b"%d" % len(buckets), *(b.key for b in buckets), spec)


def lane_share(rate: Rate, lanes: int) -> Rate:
    """One lane's part of a poll-wide limit: the rate divided by the lanes, the burst too
    (rounded up, so the lanes together never admit less than the poll's burst)."""
    return Rate(rate.per_s / lanes, -(-rate.burst // lanes))


class _PollBuckets:
    """The poll limit's buckets, computed once per poll (definitions are immutable): one per
    lane, each with the lane's share of the limit."""

    __slots__ = ("lanes",)

    def __init__(self, poll: Poll, rate: Rate) -> None:
        spec = gcra_spec(lane_share(rate, poll.lanes))
        self.lanes = tuple(
            _Bucket(LimitScope.POLL, keys.lane_rate(poll.id, lane).encode(), spec)
            for lane in range(poll.lanes)
        )


class ValkeyRateLimits:
    def __init__(self, client: StoreClient, *, one_call: bool = False) -> None:
        """`one_call`: every group in one FCALL, for a store of one node (never a cluster: the
        keys of one call would span slots)."""
        self._client = client
        self._one_call = one_call
        self._turn = itertools.count()  # the lane the poll limit takes from next (round robin)
        self._polls: dict[str, _PollBuckets] = {}
        self._specs: dict[Rate, bytes] = {}

    async def take(self, poll: Poll, voter: str, address: str, subnet: str) -> Limited | None:
        limits = poll.defences.limits
        groups: list[list[_Bucket]] = []
        if subnet:
            network = []
            if limits.subnet is not None:
                key = keys.rate_subnet(subnet).encode()
                network.append(_Bucket(LimitScope.SUBNET, key, self._spec(limits.subnet)))
            if limits.address is not None and address:
                key = keys.rate_address(subnet, address).encode()
                network.append(_Bucket(LimitScope.ADDRESS, key, self._spec(limits.address)))
            if network:
                groups.append(network)
        if voter and limits.voter is not None:
            key = keys.rate_voter(voter).encode()
            groups.append([_Bucket(LimitScope.VOTER, key, self._spec(limits.voter))])
        if limits.poll is not None:
            lanes = self._poll_buckets(poll, limits.poll).lanes
            groups.append([lanes[next(self._turn) % poll.lanes]])
        if not groups:
            return None
        if self._one_call:
            command = gcra_command(groups)
            client = self._client
            reply = await (client.submit(command) if client.connected else client.call(*command))
            return _longest_wait([reply], [[b for group in groups for b in group]])
        replies = await self._client.pipeline([gcra_command([group]) for group in groups])
        return _longest_wait(replies, groups)

    def _spec(self, rate: Rate) -> bytes:
        spec = self._specs.get(rate)
        if spec is None:
            if len(self._specs) >= MAX_CACHED_POLLS:
                self._specs.clear()
            spec = self._specs[rate] = gcra_spec(rate)
        return spec

    def _poll_buckets(self, poll: Poll, rate: Rate) -> _PollBuckets:
        buckets = self._polls.get(poll.id)
        if buckets is None:
            if len(self._polls) >= MAX_CACHED_POLLS:  # bounded: a few keys per poll
                self._polls.clear()
            buckets = self._polls[poll.id] = _PollBuckets(poll, rate)
        return buckets


def _longest_wait(replies: list[Any], calls: Sequence[Sequence[_Bucket]]) -> Limited | None:
    """tally_gcra's replies ({0, 0}, or {retry_after_ms, refusing bucket}) as the one refusal
    to tell: the longest wait, since a retry any sooner is refused by that limit anyway."""
    worst: Limited | None = None
    for reply, buckets in zip(replies, calls, strict=True):
        if isinstance(reply, ReplyError):
            raise StoreUnavailable(f"rate limit function failed: {reply}")
        wait_ms, which = reply
        if which and (worst is None or wait_ms > worst.retry_after_ms):
            worst = Limited(buckets[which - 1].scope, wait_ms)
    return worst
