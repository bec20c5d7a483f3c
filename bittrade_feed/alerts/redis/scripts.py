"""The Lua scripts of the alert data: every check-then-write is one atomic step at Redis.

Each script gets ``ARGV[1]`` = ``AlertKeys.base`` and builds the keys it touches from it
(``keys`` has the layout); ``KEYS[1]`` is a key of the same hash-tag slot, for routing,
and the commit's ``KEYS[1]`` is the leader key its fence reads. Rejections (quota, version,
owner) are return codes; only a stale leader is an error reply (``FENCED``), as for the
shared log's publish script.

Nullable fields are absent from their hash (HMGET gives nil), never an empty string,
except a firing's ``tick_id``: "" for a test firing.
"""

from __future__ import annotations

PRELUDE = """
local B = ARGV[1]
local function k(...) return B .. ':' .. table.concat({...}, ':') end

-- Remove one outbox row and every index naming it.
local function drop_row(row)
  local rk = k('row', row)
  local r = redis.call('HMGET', rk, 'owner', 'endpoint_id', 'rule_id')
  redis.call('ZREM', k('due'), row)
  if r[1] then redis.call('ZREM', k('own-failed', r[1]), row) end
  if r[2] then redis.call('SREM', k('endpoint-rows', r[2]), row) end
  if r[3] then redis.call('SREM', k('rule-rows', r[3]), row) end
  redis.call('DEL', rk)
end

-- Drop a firing that left the rule's retained history: its delivered and failed rows go
-- with it; a pending one stays (it carries its own payload) and goes when it finishes.
local function forget_firing(rule_id, owner, fid)
  local fk = k('firing', fid)
  local f = redis.call('HMGET', fk, 'tick_id', 'rows')
  if f[1] and f[1] ~= '' then redis.call('HDEL', k('rule-ticks', rule_id), f[1]) end
  for row in string.gmatch(f[2] or '', '[^,]+') do
    local state = redis.call('HGET', k('row', row), 'state')
    if state and state ~= 'pending' then drop_row(row) end
  end
  redis.call('ZREM', k('own-firings', owner), fid)
  redis.call('DEL', fk)
end

-- The next id from counter ``name``, above ``floor`` (the highest the caller has seen).
-- A counter at or below it means Redis lost it (a restart without persistence, a
-- failover that lost the last writes): an id handed out before may be held by a client or
-- a receiver (webhook-id, If-Match), which would take the new one for the old. Jump well
-- above every id the caller knows of, as the shared log's new epoch does.
local function next_id(name, floor)
  local id = redis.call('INCR', k('ids', name))
  if id <= tonumber(floor) then
    id = tonumber(floor) + 1000
    redis.call('SET', k('ids', name), id)
  end
  return id
end

-- Record a firing of rule_id (tick "" for a test firing): the firing, one pending row per
-- live endpoint of the owner's the rule names, the indexes, the fan-out stream entry, and
-- the history bound. ``floor``: the highest firing id the caller has seen. Returns the
-- new firing id.
local function fire(rule_id, owner, hooks, tick, at_ms, payload, history, fired_maxlen, floor)
  local fid = next_id('firing', floor)
  local rows = {}
  for ep in string.gmatch(hooks or '', '[^,]+') do
    local e = redis.call('HMGET', k('endpoint', ep), 'owner', 'disabled_ms')
    if e[1] == owner and not e[2] then
      local row = 'alert_' .. fid .. '_webhook_' .. ep
      redis.call('HSET', k('row', row), 'firing_id', fid, 'rule_id', rule_id, 'owner', owner,
        'endpoint_id', ep, 'attempts', 0, 'next_at_ms', at_ms, 'state', 'pending',
        'at_ms', at_ms, 'payload', payload)
      redis.call('ZADD', k('due'), at_ms, row)
      redis.call('SADD', k('rule-rows', rule_id), row)
      redis.call('SADD', k('endpoint-rows', ep), row)
      rows[#rows + 1] = row
    end
  end
  redis.call('HSET', k('firing', fid), 'rule_id', rule_id, 'owner', owner, 'tick_id', tick,
    'at_ms', at_ms, 'payload', payload, 'rows', table.concat(rows, ','))
  redis.call('ZADD', k('rule-firings', rule_id), fid, fid)
  redis.call('ZADD', k('own-firings', owner), fid, fid)
  local tick_json = tick
  if tick == '' then tick_json = 'null' end
  redis.call('XADD', k('fired'), 'MAXLEN', '~', fired_maxlen, '*', 'o', owner,
    'f', '[' .. fid .. ',' .. rule_id .. ',' .. tick_json .. ',' .. at_ms .. ',' .. payload .. ']')
  local extra = redis.call('ZCARD', k('rule-firings', rule_id)) - tonumber(history)
  if extra > 0 then
    local old = redis.call('ZPOPMIN', k('rule-firings', rule_id), extra)
    for i = 1, #old, 2 do forget_firing(rule_id, owner, old[i]) end
  end
  return fid
end

-- The rule's owner and version if it is the caller's and at the version asked for
-- ("" = any): {0, version, created_ms}; {-1}: none (or another's); {-2, version}: changed.
local function check_rule(owner, rule_id, version)
  local cur = redis.call('HMGET', k('rule', rule_id), 'owner', 'version', 'created_ms')
  if cur[1] ~= owner then return {-1} end
  if version ~= '' and tonumber(version) ~= tonumber(cur[2]) then return {-2, cur[2]} end
  return {0, cur[2], cur[3]}
end

local function changed(rule_id, maxlen)
  redis.call('XADD', k('rule-changes'), 'MAXLEN', '~', maxlen, '*', 'r', rule_id)
end

-- Finish a pending row: state, attempts, error; out of the due set; listed if failed.
local function finish_row(row, state, has_error, error)
  local rk = k('row', row)
  local r = redis.call('HMGET', rk, 'state', 'owner', 'endpoint_id', 'firing_id')
  if r[1] ~= 'pending' then return 0 end
  redis.call('HINCRBY', rk, 'attempts', 1)
  redis.call('HSET', rk, 'state', state)
  if has_error == '1' then redis.call('HSET', rk, 'last_error', error)
  else redis.call('HDEL', rk, 'last_error') end
  redis.call('ZREM', k('due'), row)
  redis.call('SREM', k('endpoint-rows', r[3]), row)
  if redis.call('EXISTS', k('firing', r[4])) == 0 then
    drop_row(row)  -- its firing left the history while it was pending
  elseif state == 'failed' then
    redis.call('ZADD', k('own-failed', r[2]), r[4], row)
  else
    redis.call('HDEL', rk, 'payload')  -- nothing sends a delivered row again
  end
  return 1
end
"""

RULE_FIELDS = (
    "owner",
    "pair",
    "kind",
    "params",
    "frequency",
    "state",
    "last_tick_id",
    "version",
    "created_ms",
    "expires_ms",
)
"""The rule hash fields in ``store.RULE_COLUMNS`` order (after the id)."""
FIRING_FIELDS = ("rule_id", "tick_id", "at_ms", "payload")
ENDPOINT_FIELDS = (
    "owner",
    "url",
    "secret",
    "old_secret",
    "old_until_ms",
    "disabled_ms",
    "created_ms",
    "format",
)
"""The endpoint hash fields in ``endpoints.COLUMNS`` order (after the id)."""


def _fields(names: tuple[str, ...]) -> str:
    return ", ".join(f"'{n}'" for n in names)


READ_RULES = f"""
-- ARGV: base, index zset key suffix ("rules" or "own-rules:<owner>"), after id, limit.
local ids = redis.call('ZRANGEBYSCORE', B .. ':' .. ARGV[2], '(' .. ARGV[3], '+inf',
  'LIMIT', 0, tonumber(ARGV[4]))
local out = {{}}
for _, id in ipairs(ids) do
  local r = redis.call('HMGET', k('rule', id), {_fields(RULE_FIELDS)})
  if r[1] then table.insert(r, 1, id); out[#out + 1] = r end
end
return out
"""

CREATE_RULE = """
-- ARGV: base, owner, max_rules, created_ms, pair, kind, params, frequency, state,
-- last_tick_id, expires_ms ("" = none), hooks, changes maxlen, the highest rule id the
-- caller has seen. Returns the id, -1: quota.
local own = k('own-rules', ARGV[2])
if redis.call('ZCARD', own) >= tonumber(ARGV[3]) then return -1 end
local id = next_id('rule', ARGV[14])
local rk = k('rule', id)
redis.call('HSET', rk, 'owner', ARGV[2], 'created_ms', ARGV[4], 'version', 1,
  'pair', ARGV[5], 'kind', ARGV[6], 'params', ARGV[7], 'frequency', ARGV[8],
  'state', ARGV[9], 'last_tick_id', ARGV[10], 'hooks', ARGV[12])
if ARGV[11] ~= '' then redis.call('HSET', rk, 'expires_ms', ARGV[11]) end
redis.call('ZADD', k('rules'), id, id)
redis.call('ZADD', own, id, id)
changed(id, ARGV[13])
return id
"""

REPLACE_RULE = """
-- ARGV: base, owner, rule id, version ("" = any), pair, kind, params, frequency, state,
-- last_tick_id, expires_ms, hooks, changes maxlen. Returns check_rule's answer, with the
-- new version on success.
local c = check_rule(ARGV[2], ARGV[3], ARGV[4])
if c[1] ~= 0 then return c end
local rk = k('rule', ARGV[3])
local version = tonumber(c[2]) + 1
redis.call('HSET', rk, 'version', version, 'pair', ARGV[5], 'kind', ARGV[6],
  'params', ARGV[7], 'frequency', ARGV[8], 'state', ARGV[9], 'last_tick_id', ARGV[10],
  'hooks', ARGV[12])
if ARGV[11] ~= '' then redis.call('HSET', rk, 'expires_ms', ARGV[11])
else redis.call('HDEL', rk, 'expires_ms') end
changed(ARGV[3], ARGV[13])
return {0, version, c[3]}
"""

DELETE_RULE = """
-- ARGV: base, owner, rule id, version, changes maxlen. The rule, its firings and all its
-- outbox rows (as one daemon's delete does).
local c = check_rule(ARGV[2], ARGV[3], ARGV[4])
if c[1] ~= 0 then return c end
local id, owner = ARGV[3], ARGV[2]
for _, fid in ipairs(redis.call('ZRANGE', k('rule-firings', id), 0, -1)) do
  redis.call('ZREM', k('own-firings', owner), fid)
  redis.call('DEL', k('firing', fid))
end
for _, row in ipairs(redis.call('SMEMBERS', k('rule-rows', id))) do drop_row(row) end
redis.call('DEL', k('rule', id), k('rule-firings', id), k('rule-ticks', id), k('rule-rows', id))
redis.call('ZREM', k('rules'), id)
redis.call('ZREM', k('own-rules', owner), id)
changed(id, ARGV[5])
return c
"""

COMMIT = """
-- KEYS: leader. ARGV: base, lease token, history, fired maxlen, the highest firing id the
-- caller has seen, then per change: rule id,
-- version, state, last_tick_id, firing tick ("" = no firing), payload, at_ms.
-- Returns {change index (from 0), firing id} per firing recorded.
if redis.call('GET', KEYS[1]) ~= ARGV[2] then
  return redis.error_reply('FENCED the lease is not held by ' .. ARGV[2])
end
local out = {}
for i = 6, #ARGV, 7 do
  local id, tick = ARGV[i], ARGV[i + 4]
  local rk = k('rule', id)
  local cur = redis.call('HMGET', rk, 'version', 'last_tick_id', 'owner', 'hooks')
  if cur[1] and tonumber(cur[1]) == tonumber(ARGV[i + 1]) then
    local last = math.max(tonumber(cur[2]), tonumber(ARGV[i + 3]))
    redis.call('HSET', rk, 'state', ARGV[i + 2], 'last_tick_id', last)
    if tick ~= '' and redis.call('HEXISTS', k('rule-ticks', id), tick) == 0 then
      local fid = fire(id, cur[3], cur[4], tick, ARGV[i + 6], ARGV[i + 5], ARGV[3], ARGV[4],
        ARGV[5])
      redis.call('HSET', k('rule-ticks', id), tick, fid)
      out[#out + 1] = {(i - 6) / 7, fid}
    end
  end
end
return out
"""

TEST_FIRE = """
-- ARGV: base, owner, rule id, payload, at_ms, history, fired maxlen, the highest firing
-- id the caller has seen. The firing id, -1:
-- no such rule of the owner's.
local c = check_rule(ARGV[2], ARGV[3], '')
if c[1] ~= 0 then return -1 end
local hooks = redis.call('HGET', k('rule', ARGV[3]), 'hooks')
return fire(ARGV[3], ARGV[2], hooks, '', ARGV[5], ARGV[4], ARGV[6], ARGV[7], ARGV[8])
"""

READ_FIRINGS = f"""
-- ARGV: base, owner, rule id ("" = every rule of the owner's), after id, limit.
-- A rule's newest first; the owner's (after "after") oldest first.
local ids
if ARGV[3] ~= '' then
  if redis.call('HGET', k('rule', ARGV[3]), 'owner') ~= ARGV[2] then return {{}} end
  ids = redis.call('ZREVRANGE', k('rule-firings', ARGV[3]), 0, tonumber(ARGV[5]) - 1)
else
  ids = redis.call('ZRANGEBYSCORE', k('own-firings', ARGV[2]), '(' .. ARGV[4], '+inf',
    'LIMIT', 0, tonumber(ARGV[5]))
end
local out = {{}}
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', k('firing', id), {_fields(FIRING_FIELDS)})
  if f[1] then table.insert(f, 1, id); out[#out + 1] = f end
end
return out
"""

PENDING_ROWS = """
-- ARGV: base. Every pending row as {id, firing id}.
local out = {}
for _, row in ipairs(redis.call('ZRANGE', k('due'), 0, -1)) do
  out[#out + 1] = {row, redis.call('HGET', k('row', row), 'firing_id') or '0'}
end
return out
"""

CREATE_ENDPOINT = """
-- ARGV: base, owner, limit, id, url, secret, created_ms, format. 1, -1: quota, -2: id taken.
local own = k('own-endpoints', ARGV[2])
if redis.call('ZCARD', own) >= tonumber(ARGV[3]) then return -1 end
local ek = k('endpoint', ARGV[4])
if redis.call('EXISTS', ek) == 1 then return -2 end
redis.call('HSET', ek, 'owner', ARGV[2], 'url', ARGV[5], 'secret', ARGV[6],
  'created_ms', ARGV[7], 'format', ARGV[8])
redis.call('ZADD', own, ARGV[7], ARGV[4])
return 1
"""

DELETE_ENDPOINT = """
-- ARGV: base, owner, id. The endpoint and its pending rows; 1, or 0: none of the owner's.
local ek = k('endpoint', ARGV[3])
if redis.call('HGET', ek, 'owner') ~= ARGV[2] then return 0 end
for _, row in ipairs(redis.call('SMEMBERS', k('endpoint-rows', ARGV[3]))) do
  if redis.call('HGET', k('row', row), 'state') == 'pending' then drop_row(row) end
end
redis.call('DEL', ek, k('endpoint-rows', ARGV[3]))
redis.call('ZREM', k('own-endpoints', ARGV[2]), ARGV[3])
return 1
"""

ROTATE_ENDPOINT = f"""
-- ARGV: base, owner, id, new secret, old_until_ms. The endpoint's fields after, or {{}}.
local ek = k('endpoint', ARGV[3])
local cur = redis.call('HMGET', ek, 'owner', 'secret')
if cur[1] ~= ARGV[2] then return {{}} end
redis.call('HSET', ek, 'secret', ARGV[4], 'old_secret', cur[2], 'old_until_ms', ARGV[5])
return redis.call('HMGET', ek, {_fields(ENDPOINT_FIELDS)})
"""

READ_ENDPOINTS = f"""
-- ARGV: base, owner. The owner's endpoints by (created_ms, id): {{id, fields...}} each.
local out = {{}}
for _, id in ipairs(redis.call('ZRANGE', k('own-endpoints', ARGV[2]), 0, -1)) do
  local e = redis.call('HMGET', k('endpoint', id), {_fields(ENDPOINT_FIELDS)})
  if e[1] then table.insert(e, 1, id); out[#out + 1] = e end
end
return out
"""

READ_FAILED = """
-- ARGV: base, owner, count. The owner's newest failed rows by firing id:
-- {id, rule_id, firing_id, endpoint_id, attempts, last_error}.
local out = {}
for _, row in ipairs(redis.call('ZREVRANGE', k('own-failed', ARGV[2]), 0, tonumber(ARGV[3]) - 1)) do
  local r = redis.call('HMGET', k('row', row), 'rule_id', 'firing_id', 'endpoint_id',
    'attempts', 'last_error')
  if r[1] then table.insert(r, 1, row); out[#out + 1] = r end
end
return out
"""

RETRY = """
-- ARGV: base, owner, row id, now_ms. "queued", "not found", "not failed", "endpoint gone".
local rk = k('row', ARGV[3])
local r = redis.call('HMGET', rk, 'owner', 'state', 'endpoint_id')
if r[1] ~= ARGV[2] then return 'not found' end
if r[2] ~= 'failed' then return 'not failed' end
local e = redis.call('HMGET', k('endpoint', r[3]), 'owner', 'disabled_ms')
if e[1] ~= ARGV[2] or e[2] then return 'endpoint gone' end
redis.call('HSET', rk, 'state', 'pending', 'attempts', 0, 'next_at_ms', ARGV[4])
redis.call('ZADD', k('due'), ARGV[4], ARGV[3])
redis.call('ZREM', k('own-failed', ARGV[2]), ARGV[3])
redis.call('SADD', k('endpoint-rows', r[3]), ARGV[3])
return 'queued'
"""

DUE = f"""
-- ARGV: base, now_ms, limit. Due rows by (next_at_ms, id), each {{id, attempts, at_ms,
-- payload, endpoint id or nil, endpoint fields...}}.
local out = {{}}
for _, row in ipairs(redis.call('ZRANGEBYSCORE', k('due'), '-inf', ARGV[2], 'LIMIT', 0,
    tonumber(ARGV[3]))) do
  local r = redis.call('HMGET', k('row', row), 'attempts', 'at_ms', 'payload', 'endpoint_id')
  if not r[3] then
    redis.call('ZREM', k('due'), row)  -- no row behind it (removed by hand): nothing to send
  else
    local item = {{row, r[1], r[2], r[3]}}
    local ek = k('endpoint', r[4])
    if redis.call('EXISTS', ek) == 1 then
      item[5] = r[4]
      local e = redis.call('HMGET', ek, {_fields(ENDPOINT_FIELDS)})
      for i = 1, #e do item[5 + i] = e[i] end
    else
      item[5] = false
    end
    out[#out + 1] = item
  end
end
return out
"""

RESCHEDULE = """
-- ARGV: base, row id, next_at_ms, error. Only a pending row; 1 if it was.
local rk = k('row', ARGV[2])
if redis.call('HGET', rk, 'state') ~= 'pending' then return 0 end
redis.call('HINCRBY', rk, 'attempts', 1)
redis.call('HSET', rk, 'next_at_ms', ARGV[3], 'last_error', ARGV[4])
redis.call('ZADD', k('due'), ARGV[3], ARGV[2])
return 1
"""

FINISH = """
-- ARGV: base, row id, state, "1" if an error follows, error.
return finish_row(ARGV[2], ARGV[3], ARGV[4], ARGV[5])
"""

DISABLE = """
-- ARGV: base, row id, endpoint id, now_ms, error. Disable the endpoint (if it still is
-- enabled) and fail the row.
local ek = k('endpoint', ARGV[3])
if redis.call('EXISTS', ek) == 1 and not redis.call('HGET', ek, 'disabled_ms') then
  redis.call('HSET', ek, 'disabled_ms', ARGV[4])
end
return finish_row(ARGV[2], 'failed', '1', ARGV[5])
"""
