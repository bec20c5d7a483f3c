"""The Lua scripts: lease (acquire, renew, observe), release, and the fenced publish.

Each is one atomic step inside Redis, so the checks that matter (does this caller hold the
lease? is this id above every id ever used?) happen at the resource, not in a daemon that
may have been paused since it last looked (Kleppmann's fencing argument, checked by token
as antirez suggests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bittrade_feed.cluster.keys import Keys

if TYPE_CHECKING:
    from redis.asyncio import Redis

LEASE = """
-- KEYS: leader, term, stream, meta. ARGV: node, the caller's token (or ""), ttl ms, the
-- lowest acceptable term (terms keep growing even if Redis lost the counter), and "1" if
-- the caller may take a free lease ("0": only look).
-- Acquire a free lease under a new term, renew our own, or just look; then report what
-- the log looks like from this server, so a node connected to a stale server notices.
local cur = redis.call('GET', KEYS[1])
local role = 0
if (not cur) and ARGV[5] == '1' then
  local term = redis.call('INCR', KEYS[2])
  if term < tonumber(ARGV[4]) then
    term = tonumber(ARGV[4])
    redis.call('SET', KEYS[2], term)
  end
  cur = ARGV[1] .. ':' .. term
  redis.call('SET', KEYS[1], cur, 'PX', ARGV[3])
  role = 1
elseif cur == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  role = 2
end
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local last_id = '0-0'
if #last > 0 then last_id = last[1][1] end
local epoch = redis.call('HGET', KEYS[4], 'epoch') or ''
return {role, cur or '', last_id, epoch}
"""

RELEASE = """
-- KEYS: leader. ARGV: token. Delete the lease only if it is still ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

PUBLISH = """
-- KEYS: leader, meta, stream. ARGV: token, the highest id the caller knows was assigned,
-- the epoch gap, maxlen, a new epoch name, then field, value, ...
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED the lease is not held by ' .. ARGV[1])
end
local known = tonumber(ARGV[2])
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local last_n = 0
if #last > 0 then last_n = tonumber(string.match(last[1][1], '^(%d+)')) end
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if (not epoch) or last_n < known then
  -- Redis lost the id authority (restart without persistence) or acknowledged entries (a
  -- failover): start a new epoch well above every id the caller knows of, so no id that
  -- some daemon may already hold is ever handed out again for another price.
  epoch = ARGV[5]
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'seq', math.max(known, last_n) + tonumber(ARGV[3]))
end
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
if seq <= last_n then
  -- Never write an id at or below the log's newest, whatever happened to the hash.
  seq = last_n + 1
  redis.call('HSET', KEYS[2], 'seq', seq)
end
local fields = {'e', epoch}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], seq .. '-0', unpack(fields))
return {seq, epoch}
"""

FENCED = "FENCED"
"""The error prefix PUBLISH answers with when the caller is not the lease holder."""


@dataclass(frozen=True, slots=True)
class Observation:
    """One lease round trip: what we are now, who leads, and the log's head there."""

    role: int
    """0: someone else (or no one) holds the lease; 1: we just acquired it; 2: renewed."""
    leader: str
    last_id: int
    epoch: str


class Scripts:
    """The scripts registered on one client (redis-py reloads them after a Redis restart)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.keys = keys
        self._lease = redis.register_script(LEASE)
        self._release = redis.register_script(RELEASE)
        self._publish = redis.register_script(PUBLISH)

    async def lease(
        self, node: str, token: str, ttl_ms: int, min_term: int, *, acquire: bool = True
    ) -> Observation:
        """Acquire (if ``acquire``), renew or observe the lease in one round trip."""
        k = self.keys
        reply: Any = await self._lease(
            keys=[k.leader, k.term, k.stream, k.meta],
            args=[node, token, ttl_ms, min_term, "1" if acquire else "0"],
        )
        role, leader, last_id, epoch = reply
        return Observation(int(role), str(leader), entry_seq(str(last_id)), str(epoch))

    async def release(self, token: str) -> bool:
        """Give the lease up if it is still ours."""
        return bool(await self._release(keys=[self.keys.leader], args=[token]))

    async def publish(
        self, token: str, known: int, gap: int, maxlen: int, new_epoch: str, fields: list[str]
    ) -> tuple[int, str]:
        """Append one entry under the next id; ``ResponseError('FENCED ...')`` if not leader."""
        k = self.keys
        reply: Any = await self._publish(
            keys=[k.leader, k.meta, k.stream],
            args=[token, known, gap, maxlen, new_epoch, *fields],
        )
        seq, epoch = reply
        return int(seq), str(epoch)


def entry_seq(entry_id: str) -> int:
    """The tick id of a stream entry id ``<seq>-0``."""
    return int(entry_id.partition("-")[0])


def token_term(token: str) -> int:
    """The fencing term of a lease token ``<node>:<term>`` (0 if it has none)."""
    _, _, term = token.rpartition(":")
    return int(term) if term.isdigit() else 0
