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

-- Look up a vote in the lane's ledger by its seq; returns option, accepted ms (nil once trimmed).
local function ledger_entry(ledger, seq)
  local id = int(seq) .. '-0'
  local found = redis.call('XRANGE', ledger, id, id)
  if #found == 0 then
    return false, 0
  end
  local fields = found[1][2]
  local option, at = false, 0
  for i = 1, #fields, 2 do
    if fields[i] == 'o' then option = fields[i + 1] end
    if fields[i] == 't' then at = tonumber(fields[i + 1]) end
  end
  return option, at
end

--[[ tally_vote: cast one vote, at most once per voter, atomically.
KEYS[1] lane hash   KEYS[2] counts hash   KEYS[3] ledger stream   KEYS[4] voter-index bucket
ARGV[1] pseudonym (16 raw bytes)   ARGV[2] voter-index field   ARGV[3] option id
Returns one of:
  {'accepted', seq, option, accepted_ms}
  {'already', seq, option, accepted_ms}     (option false, ms 0 if the entry was trimmed)
  {'not-open', state}                       (state 'closed' once the deadline has passed)
  {'unknown-option'}
  {'no-lane'}
The duplicate check comes before the state check on purpose: a retry of an accepted vote (say,
after a timeout that raced with close) must get its receipt back, not a refusal. ]]
local function vote(keys, args)
  local lane = redis.call('HMGET', keys[1], 'state', 'closes_at', 'seq')
  local state = lane[1]
  if not state then
    return {'no-lane'}
  end
  local seen = redis.call('HGET', keys[4], args[2])
  if seen then
    local option, at = ledger_entry(keys[3], tonumber(seen))
    return {'already', tonumber(seen), option, at}
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
  redis.call('XADD', keys[3], int(seq) .. '-0', 'p', args[1], 'o', args[3], 't', int(now))
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

--[[ tally_poll_create: store a new poll's record and start its admin log with 'created'.
KEYS[1] poll hash   KEYS[2] admin stream
ARGV[1] definition JSON   ARGV[2] state   ARGV[3] created_at ms   ARGV[4] actor (may be empty)
Returns 'created', or an error if the poll record exists. ]]
local function poll_create(keys, args)
  if redis.call('EXISTS', keys[1]) == 1 then
    return redis.error_reply('EXISTS poll already exists')
  end
  redis.call('HSET', keys[1], 'def', args[1], 'state', args[2], 'updated_at', args[3], 'admin_seq', '1')
  redis.call('XADD', keys[2], '1-0', 'a', 'created', 't', args[3], 'u', args[4])
  return 'created'
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

redis.register_function('tally_vote', vote)
redis.register_function('tally_lease', lease)
redis.register_function('tally_release', release)
redis.register_function('tally_snapshot', snapshot)
redis.register_function('tally_lane_create', lane_create)
redis.register_function('tally_move', move)
redis.register_function('tally_poll_create', poll_create)
redis.register_function('tally_poll_move', poll_move)
