#!lua name=tally

-- Tally's Valkey Functions. Each call touches the keys of ONE lane (or one poll's meta) only, so
-- every function is atomic on a single node, in a single Valkey or in a Valkey Cluster alike.
-- Loaded with FUNCTION LOAD REPLACE at every (re)connect; key names come from store/keys.py.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(n)
  return string.format('%d', n)
end

-- Look up a vote in the lane's ledger by its seq; returns option, accepted ms (false, 0 once
-- trimmed), whether it was cast held (its `s` field) and its admission signature (`g`, false
-- if none).
local function ledger_entry(ledger, seq)
  local id = int(seq) .. '-0'
  local found = redis.call('XRANGE', ledger, id, id)
  if #found == 0 then
    return false, 0, false, false
  end
  local fields = found[1][2]
  local option, at, held, signed = false, 0, false, false
  for i = 1, #fields, 2 do
    if fields[i] == 'o' then option = fields[i + 1] end
    if fields[i] == 't' then at = tonumber(fields[i + 1]) end
    if fields[i] == 's' then held = fields[i + 1] == 'held' end
    if fields[i] == 'g' then signed = fields[i + 1] end
  end
  return option, at, held, signed
end

-- What became of vote `seq` (a decimal string) of a lane: the review decision if one was
-- applied, 'held' while it waits in the held index, else 'accepted'. `was_held` is what its
-- ledger entry says (unknown once trimmed, so the held index is asked then).
local function vote_status(held_index, decided, seq, was_held)
  local decision = redis.call('HGET', decided, seq)
  if decision then
    return decision
  end
  if was_held or redis.call('HEXISTS', held_index, seq) == 1 then
    return 'held'
  end
  return 'accepted'
end

--[[ tally_vote: cast one vote, at most once per voter, atomically.
KEYS[1] lane hash   KEYS[2] counts hash   KEYS[3] ledger stream   KEYS[4] voter-index bucket
KEYS[5] held index   KEYS[6] decided hash     (held mode only)
ARGV[1] pseudonym (16 raw bytes)   ARGV[2] voter-index field   ARGV[3] option id
ARGV[4] hold reason   ARGV[5] evidence field, '' (held mode only; tally_held_evidence fills it)
ARGV[4] (ARGV[6] in held mode) the gateway's admission signature, 76 opaque bytes, kept as the
  entry's `g` field; absent or empty for an unsigned vote (TALLY_ADMISSION_SIGNING=off)
Returns one of:
  {'accepted', seq, option, accepted_ms}
  {'held', seq, option, accepted_ms}         (held mode: recorded, not counted)
  {'already', seq, option, accepted_ms, status, signature}
      option false, ms 0 if the entry was trimmed; status accepted | held | released | voided;
      signature the entry's `g` (false if trimmed or unsigned), so a repeat gets its receipt back
  {'not-open', state}                       (state 'closed' once the deadline has passed)
  {'unknown-option'}
  {'no-lane'}
The duplicate check comes before the state check on purpose: a retry of an accepted vote (say,
after a timeout that raced with close) must get its receipt back, not a refusal.
Held mode (an admission check held the vote) records the vote like any other (ledger entry with
`s`=`held`, voter index) but instead of counting it adds it to the lane's held index
(seq -> option|reason|evidence|ms) and to the lane's `held` field, until a reviewer decides
(tally_review). The reason and the sealed network evidence are for reviewers, kept out of the
ledger. ]]
local function vote(keys, args)
  local lane = redis.call('HMGET', keys[1], 'state', 'closes_at', 'seq')
  local state = lane[1]
  if not state then
    return {'no-lane'}
  end
  local seen = redis.call('HGET', keys[4], args[2])
  if seen then
    local option, at, was_held, signed = ledger_entry(keys[3], tonumber(seen))
    local status = 'accepted'
    if was_held or not option then
      -- Rare (a repeat of a held or archived vote): the plain-mode call names no review keys,
      -- so they are built from the lane hash's name, which shares their hash tag and slot.
      local prefix = string.sub(keys[1], 1, -5)
      status = vote_status(keys[5] or (prefix .. 'held'), keys[6] or (prefix .. 'decided'),
        seen, was_held)
    end
    return {'already', tonumber(seen), option, at, status, signed}
  end
  if state ~= 'open' then
    return {'not-open', state}
  end
  local now = now_ms()
  local closes_at = tonumber(lane[2])
  if closes_at and now >= closes_at then
    return {'not-open', 'closed'}
  end
  if redis.call('HEXISTS', keys[2], args[3]) == 0 then
    return {'unknown-option'}
  end
  local seq = (tonumber(lane[3]) or 0) + 1
  local entry = {'p', args[1], 'o', args[3], 't', int(now)}
  local signature = args[keys[5] and 6 or 4]
  if keys[5] then
    table.insert(entry, 's')
    table.insert(entry, 'held')
  end
  if signature and signature ~= '' then
    if #signature ~= 76 then  -- the archiver decodes it strictly: keep a bad one out of the log
      return redis.error_reply('ERR an admission signature is 76 bytes')
    end
    table.insert(entry, 'g')
    table.insert(entry, signature)
  end
  if keys[5] then
    redis.call('XADD', keys[3], int(seq) .. '-0', unpack(entry))
    redis.call('HSET', keys[4], args[2], int(seq))
    redis.call('HSET', keys[5], int(seq), args[3] .. '|' .. args[4] .. '|' .. args[5] .. '|' .. int(now))
    redis.call('HINCRBY', keys[1], 'held', 1)
    redis.call('HSET', keys[1], 'seq', int(seq), 'at', int(now))
    return {'held', seq, args[3], now}
  end
  redis.call('XADD', keys[3], int(seq) .. '-0', unpack(entry))
  redis.call('HSET', keys[4], args[2], int(seq))
  redis.call('HINCRBY', keys[2], args[3], 1)
  redis.call('HSET', keys[1], 'seq', int(seq), 'at', int(now))
  return {'accepted', seq, args[3], now}
end

--[[ tally_lane_create: create a lane in state 'draft' with every option's counter at 0.
KEYS[1] lane hash   KEYS[2] counts hash
ARGV[1] closes_at ms or ''   ARGV[2..] option ids
Returns 'created', or an error if the lane already exists. ]]
local function lane_create(keys, args)
  if redis.call('EXISTS', keys[1]) == 1 then
    return redis.error_reply('EXISTS lane already exists')
  end
  redis.call('HSET', keys[1], 'state', 'draft', 'closes_at', args[1], 'seq', '0', 'at', '0')
  for i = 2, #args do
    redis.call('HSET', keys[2], args[i], '0')
  end
  return 'created'
end

-- Compare-and-set a 'state' field: to `target` from any of args[first..]. `on_moved(now)` runs in
-- the same atomic step when the state moved.
local function compare_and_set(key, target, args, first, on_moved)
  local current = redis.call('HGET', key, 'state')
  if not current then
    return {'missing'}
  end
  if current == target then
    return {'already', current}
  end
  for i = first, #args do
    if current == args[i] then
      local now = int(now_ms())
      redis.call('HSET', key, 'state', target, 'updated_at', now)
      if on_moved then on_moved(now) end
      return {'moved', current}
    end
  end
  return {'refused', current}
end

--[[ tally_move: compare-and-set a lane's lifecycle state.
KEYS[1] hash with a 'state' field
ARGV[1] target state   ARGV[2..] states it may move from
Returns {'moved', previous} | {'already', target} | {'refused', current} | {'missing'}.
Moving to the state it already has is not an error: it lets a half-done close be finished. ]]
local function move(keys, args)
  return compare_and_set(keys[1], args[1], args, 2, nil)
end

-- Append admission keys to a poll's admin log: args[first..] in fives (field, name, public key,
-- not before, not after), each appended as an 'admission-key' entry by `actor` at `at` unless the
-- poll's admission hash already holds that key with that validity.
local function append_admission_keys(keys, args, first, actor, at)
  local appended = 0
  for i = first, #args - 4, 5 do
    local validity = args[i + 3] .. '|' .. args[i + 4]
    if redis.call('HGET', keys[3], args[i]) ~= validity then
      local seq = redis.call('HINCRBY', keys[1], 'admin_seq', 1)
      redis.call('XADD', keys[2], int(seq) .. '-0', 'a', 'admission-key', 't', at, 'u', actor,
        'n', args[i + 1], 'k', args[i + 2], 'b', args[i + 3], 'e', args[i + 4])
      redis.call('HSET', keys[3], args[i], validity)
      appended = appended + 1
    end
  end
  return appended
end

--[[ tally_poll_create: store a new poll's record and start its admin log with 'created', then
the admission keys it is created with (a copy of the registry, tally.store.admission_keys).
KEYS[1] poll hash   KEYS[2] admin stream   KEYS[3] poll admission-key hash (with keys only)
ARGV[1] definition JSON   ARGV[2] state   ARGV[3] created_at ms   ARGV[4] actor (may be empty)
ARGV[5..] admission keys in fives: field, name, public key, not before ms, not after ms
Returns 'created', or an error if the poll record exists. ]]
local function poll_create(keys, args)
  if redis.call('EXISTS', keys[1]) == 1 then
    return redis.error_reply('EXISTS poll already exists')
  end
  redis.call('HSET', keys[1], 'def', args[1], 'state', args[2], 'updated_at', args[3], 'admin_seq', '1')
  redis.call('XADD', keys[2], '1-0', 'a', 'created', 't', args[3], 'u', args[4])
  if keys[3] then
    append_admission_keys(keys, args, 5, args[4], args[3])
  end
  return 'created'
end

--[[ tally_poll_admission_keys: append admission keys registered or retired since to the admin
log of a poll not closed (a closed poll's log no longer takes votes, so it is left alone).
KEYS[1] poll hash   KEYS[2] admin stream   KEYS[3] poll admission-key hash
ARGV[1] actor   ARGV[2..] admission keys in fives, as tally_poll_create
A poll opened with no admission key (made before gateways signed, or with signing off) stays
unsigned for good: a key appended to it would make the archiver refuse the unsigned votes it
already counted (and the auditor with it), so the recount would depend on when a key arrived.
Returns the number of entries appended (0 for a key already there with the same validity, so a
repeat changes nothing), -1 for a closed or missing poll, -2 for such an unsigned poll. ]]
local function poll_admission_keys(keys, args)
  local state = redis.call('HGET', keys[1], 'state')
  if not state or state == 'closed' then
    return -1
  end
  if state ~= 'draft' and redis.call('EXISTS', keys[3]) == 0 then
    return -2
  end
  return append_admission_keys(keys, args, 2, args[1], int(now_ms()))
end

--[[ tally_poll_move: tally_move for a poll record, recording the move in the admin log in the
same atomic step (entry `<admin_seq>-0`, fields a=<new state>, t=<ms>, u=<actor>).
KEYS[1] poll hash   KEYS[2] admin stream
ARGV[1] target state   ARGV[2] actor (may be empty)   ARGV[3..] states it may move from
Returns as tally_move. A repeat records nothing. ]]
local function poll_move(keys, args)
  return compare_and_set(keys[1], args[1], args, 3, function(now)
    local seq = redis.call('HINCRBY', keys[1], 'admin_seq', 1)
    redis.call('XADD', keys[2], int(seq) .. '-0', 'a', args[1], 't', now, 'u', args[2])
  end)
end

--[[ tally_lease: take or renew the aggregator lease of a poll (one active aggregator per poll).
KEYS[1] lease key   ARGV[1] owner id   ARGV[2] ttl ms
Returns 1 if `owner` holds the lease now, 0 if another live owner does. ]]
local function lease(keys, args)
  local holder = redis.call('GET', keys[1])
  if not holder or holder == args[1] then
    redis.call('SET', keys[1], args[1], 'PX', args[2])
    return 1
  end
  return 0
end

--[[ tally_release: give the lease up (on shutdown), only if `owner` holds it.
KEYS[1] lease key   ARGV[1] owner id   Returns 1 if released. ]]
local function release(keys, args)
  if redis.call('GET', keys[1]) == args[1] then
    redis.call('DEL', keys[1])
    return 1
  end
  return 0
end

--[[ tally_snapshot: store and publish a poll's snapshot, only for the lease holder and only if
seq moves forward, so seq never repeats or goes back, even across a failover.
KEYS[1] snapshot hash   KEYS[2] lease key
ARGV[1] owner id   ARGV[2] seq   ARGV[3] snapshot document (JSON carrying that seq)   ARGV[4] channel
Returns {'published', seq} | {'not-leader', 0} | {'stale', stored seq}. ]]
local function snapshot(keys, args)
  if redis.call('GET', keys[2]) ~= args[1] then
    return {'not-leader', 0}
  end
  local stored = tonumber(redis.call('HGET', keys[1], 'seq') or '0')
  local seq = tonumber(args[2])
  if seq <= stored then
    return {'stale', stored}
  end
  redis.call('HSET', keys[1], 'seq', args[2], 'doc', args[3])
  redis.call('SPUBLISH', args[4], args[3])
  return {'published', seq}
end

-- review: reviewers' decisions on held votes (tally.store.review) --------------------------------

local DECISIONS = {released = true, voided = true}

--[[ tally_review: apply one decision to held votes of one lane, each at most once.
KEYS[1] lane hash   KEYS[2] counts hash   KEYS[3] ledger stream   KEYS[4] held index
KEYS[5] decided hash
ARGV[1] 'released' | 'voided'   ARGV[2..] seqs of the lane's held votes (decimal)
Returns one word per seq, in order: 'applied' (decided now), the decision applied before
('released' | 'voided'), or 'not-held' (no held vote has that seq). Applying one: remove it from
the held index, decrement the lane's `held`, count it on release, record the decision (seq ->
decision) and append the decision entry `<seq>-0` with r=<held seq>, d=<decision>, t=<ms>. Closed
lanes too: reviewers decide after the close. The poll's admin entry (tally_poll_review) comes
first; this only follows it. ]]
local function review(keys, args)
  local decision = args[1]
  if not DECISIONS[decision] then
    return redis.error_reply('ERR decision must be released or voided')
  end
  if redis.call('EXISTS', keys[1]) == 0 then
    return redis.error_reply('ERR no such lane')
  end
  local out = {}
  local now = nil
  for i = 2, #args do
    local seq = args[i]
    local held = redis.call('HGET', keys[4], seq)
    if held then
      now = now or now_ms()
      local option = string.match(held, '^([^|]*)|')
      redis.call('HDEL', keys[4], seq)
      redis.call('HINCRBY', keys[1], 'held', -1)
      if decision == 'released' then
        redis.call('HINCRBY', keys[2], option, 1)
      end
      redis.call('HSET', keys[5], seq, decision)
      local entry = redis.call('HINCRBY', keys[1], 'seq', 1)
      redis.call('XADD', keys[3], int(entry) .. '-0', 'r', seq, 'd', decision, 't', int(now))
      redis.call('HSET', keys[1], 'at', int(now))
      out[#out + 1] = 'applied'
    else
      out[#out + 1] = redis.call('HGET', keys[5], seq) or 'not-held'
    end
  end
  return out
end

--[[ tally_poll_review: record reviewers' decisions in the poll's admin log, each held vote's once.
KEYS[1] poll hash   KEYS[2] admin stream   KEYS[3] reviewed hash
ARGV[1] actor   ARGV[2] 'released' | 'voided'   ARGV[3..] lane, seq pairs (decimal)
Returns {'missing'} for no poll, else one word per pair: 'recorded' (admin entry `<admin_seq>-0`
appended: a=reviewed, t=<ms>, u=<actor>, l=<lane>, r=<seq>, d=<decision>), or the decision
recorded before for that vote ('released' | 'voided'; nothing appended). ]]
local function poll_review(keys, args)
  local decision = args[2]
  if not DECISIONS[decision] then
    return redis.error_reply('ERR decision must be released or voided')
  end
  if redis.call('EXISTS', keys[1]) == 0 then
    return {'missing'}
  end
  local out = {}
  local now = nil
  for i = 3, #args - 1, 2 do
    local field = args[i] .. ':' .. args[i + 1]
    local before = redis.call('HGET', keys[3], field)
    if before then
      out[#out + 1] = before
    else
      now = now or int(now_ms())
      redis.call('HSET', keys[3], field, decision)
      local seq = redis.call('HINCRBY', keys[1], 'admin_seq', 1)
      redis.call('XADD', keys[2], int(seq) .. '-0', 'a', 'reviewed', 't', now, 'u', args[1],
        'l', args[i], 'r', args[i + 1], 'd', decision)
      out[#out + 1] = 'recorded'
    end
  end
  return out
end

--[[ tally_held_evidence: compare-and-set the evidence field (the third of option|reason|evidence|ms)
of held votes of one lane: the gateway fills a new held vote's empty field with its sealed
evidence, `tally evidence reencrypt` re-seals it, the retention sweep deletes it. Only a vote still
held whose field is exactly the expected one changes, so no rewrite races a decision (it never
brings a decided vote back) or another rewrite (tally.security.evidence, tally.store.evidence).
KEYS[1] held index   ARGV triples: seq, expected field, new field (no '|')
Returns the number of votes changed. ]]
local function held_evidence(keys, args)
  for i = 3, #args, 3 do
    if string.find(args[i], '|', 1, true) then
      return redis.error_reply('ERR an evidence field cannot hold |')
    end
  end
  local changed = 0
  for i = 1, #args - 2, 3 do
    local held = redis.call('HGET', keys[1], args[i])
    if held then
      local option, reason, field, at = string.match(held, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
      if field == args[i + 1] then
        redis.call('HSET', keys[1], args[i], option .. '|' .. reason .. '|' .. args[i + 2] .. '|' .. at)
        changed = changed + 1
      end
    end
  end
  return changed
end

-- end of review -------------------------------------------------------------------------------

-- rate limits: GCRA buckets shared by every gateway (tally.store.ratelimits) ---------------------

--[[ tally_gcra: take one request from GCRA buckets, group by group, each group all or none.
KEYS[1..n] the buckets (on a cluster, one call holds one group, in one hash slot): strings holding
each bucket's theoretical arrival time (TAT, microseconds of the server's clock)
ARGV[1] for each bucket in order, separated by spaces: its emission interval in microseconds
(1e6 / rate; may be fractional), its burst (requests it admits at once when full), its group.
(One argument, not three per bucket: each argument costs the gateway an encoding in Python.)
A request fits a bucket if max(TAT, now) + interval - burst * interval <= now (GCRA, as
redis-cell does it). In a group where every bucket fits, each TAT moves one interval on and its
key expires (PX) when the bucket is full again, so idle buckets cost nothing; in a group where
one does not fit, no key changes, so a refused request costs that group nothing. Groups are
independent: one call does for several groups what one call per group would.
Returns {0, 0} when every bucket fits, else {retry_after_ms, i}: the longest wait of the refusing
buckets (rounded up) and which bucket asks it. The server's TIME: gateways' clocks never matter. ]]
local function gcra(keys, args)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local spec = {}
  for word in string.gmatch(args[1], '%S+') do
    spec[#spec + 1] = tonumber(word)
  end
  local next_tats, refused = {}, {}
  local wait, which = 0, 0
  for i = 1, #keys do
    local interval = spec[3 * i - 2]
    local burst = spec[3 * i - 1]
    local tat = tonumber(redis.call('GET', keys[i]) or now)
    if tat < now then
      tat = now
    end
    local allow_at = tat + interval - burst * interval
    if allow_at > now then
      refused[spec[3 * i]] = true
      if allow_at - now > wait then
        wait, which = allow_at - now, i
      end
    end
    next_tats[i] = tat + interval
  end
  for i = 1, #keys do
    if not refused[spec[3 * i]] then
      redis.call('SET', keys[i], string.format('%.17g', next_tats[i]),
        'PX', int(math.ceil((next_tats[i] - now) / 1000)))
    end
  end
  if which > 0 then
    return {math.ceil(wait / 1000), which}
  end
  return {0, 0}
end

-- integrity: the archiver's check of live counters against the ledger (tally.store.integrity) ----

--[[ tally_lane_counters: a lane's counters and the seq of its last ledger entry, read in one atomic
step: every change to the counters comes with the entry that explains it, so the ledger recounted
up to that seq must give exactly these counts.
KEYS[1] lane hash   KEYS[2] counts hash
Returns {seq, held, {option, count, option, count, ...}}. ]]
local function lane_counters(keys, args)
  local lane = redis.call('HMGET', keys[1], 'seq', 'held')
  return {tonumber(lane[1] or '0'), tonumber(lane[2] or '0'), redis.call('HGETALL', keys[2])}
end

-- end of rate limits --------------------------------------------------------------------------

redis.register_function('tally_vote', vote)
redis.register_function('tally_lease', lease)
redis.register_function('tally_release', release)
redis.register_function('tally_snapshot', snapshot)
redis.register_function('tally_lane_create', lane_create)
redis.register_function('tally_move', move)
redis.register_function('tally_poll_create', poll_create)
redis.register_function('tally_poll_move', poll_move)
redis.register_function('tally_poll_admission_keys', poll_admission_keys)
redis.register_function('tally_review', review)
redis.register_function('tally_poll_review', poll_review)
redis.register_function('tally_held_evidence', held_evidence)
redis.register_function('tally_gcra', gcra)
redis.register_function{function_name='tally_lane_counters', callback=lane_counters,
  flags={'no-writes'}}
