"""The Lua scripts that update a job record in Redis, each in one atomic step: a chunk counted once (and the job
finished with its last chunk), the enqueue sealed, a chunk split, an attempt begun, a field changed only while the
job is open. Their keys and arguments are documented at the top of each; :class:`imsim.jobs.records.JobStore` runs them.
A job's keys all start with :func:`job_key`."""

# The finishing step shared by every script that can end a job: per-chunk bookkeeping deleted, the rest expiring.
FINISH = """
local function finish(job, now, retention, index_expiry, job_id, base)
  redis.call('HSET', job, 'finished_at', now)
  for _, suffix in ipairs({'chunks', 'attempts', 'ends', 'progress', 'running', 'refusals'}) do
    redis.call('DEL', base .. ':' .. suffix)
  end
  if tonumber(retention) > 0 then
    for _, key in ipairs({job, base .. ':failures', base .. ':reasons', base .. ':about'}) do
      redis.call('EXPIRE', key, retention)
    end
    redis.call('ZADD', index_expiry, tonumber(now) + tonumber(retention), job_id)
  end
end
local function finished_now(job)
  if redis.call('HEXISTS', job, 'queuing') == 1 or redis.call('HEXISTS', job, 'finished_at') == 1 then return false end
  return tonumber(redis.call('HGET', job, 'chunks_done')) >= tonumber(redis.call('HGET', job, 'chunks'))
end
"""

RECORD_CHUNK = (
    FINISH
    + """
-- KEYS: 1 job hash, 2 chunks hash, 3 failures list, 4 reasons hash, 5 progress hash, 6 running hash, 7 index expiry
-- ARGV: 1 chunk key, 2 result json, 3 done, 4 skipped, 5 cancelled, 6 now, 7 retention, 8 job id, 9 read bytes,
--       10 updated, 11 most distinct reason texts kept, 12.. reason, its kind, encoded path triples
-- A reason text is kept once (an id per text); past the cap on distinct texts a failure keeps its kind's text (the
-- reason without the path and numbers that made it distinct), and the job counts it in 'reasons_folded'.
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'done', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'skipped', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'cancelled', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'read_bytes', ARGV[9])
redis.call('HINCRBY', KEYS[1], 'updated', ARGV[10])
local nfailed = 0
local cap = tonumber(ARGV[11])
for i = 12, #ARGV, 3 do
  local text = ARGV[i]
  local rid = redis.call('HGET', KEYS[4], 't:' .. text)
  if not rid and tonumber(redis.call('HGET', KEYS[4], 'next') or '0') >= cap then
    text = ARGV[i + 1]
    rid = redis.call('HGET', KEYS[4], 't:' .. text)
    redis.call('HINCRBY', KEYS[1], 'reasons_folded', 1)
  end
  if not rid then
    rid = redis.call('HINCRBY', KEYS[4], 'next', 1)
    redis.call('HSET', KEYS[4], 't:' .. text, rid, 'n:' .. rid, text)
  end
  redis.call('RPUSH', KEYS[3], rid .. '\t' .. ARGV[i + 2])
  nfailed = nfailed + 1
end
redis.call('HINCRBY', KEYS[1], 'failed', nfailed)
redis.call('HINCRBY', KEYS[1], 'chunks_done', 1)
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[6])
if finished_now(KEYS[1]) then finish(KEYS[1], ARGV[6], ARGV[7], KEYS[7], ARGV[8], KEYS[1]) end
return 1
"""
)

SEAL = (
    FINISH
    + """
-- KEYS: 1 job hash, 2 index expiry, 3 about hash; ARGV: 1 now, 2 retention, 3 job id, 4.. field, value pairs for about
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
redis.call('HDEL', KEYS[1], 'queuing')
if finished_now(KEYS[1]) then finish(KEYS[1], ARGV[1], ARGV[2], KEYS[2], ARGV[3], KEYS[1]) end
return 1
"""
)

SPLIT_CHUNK = """
-- KEYS: 1 job hash, 2 chunks hash, 3 progress hash, 4 running hash; ARGV: 1 chunk key, 2 number of parts it became
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[1], 'split') == 0 then return 0 end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'chunks', tonumber(ARGV[2]) - 1)
redis.call('HINCRBY', KEYS[1], 'splits', 1)
return 1
"""

BEGIN_ATTEMPT = """
-- KEYS: 1 job hash, 2 attempts hash, 3 ends hash, 4 progress hash, 5 running hash, 6 chunks hash
-- ARGV: 1 chunk key, 2 running json
-- Returns the deaths before this attempt, or -1 when there is nothing to do: the job is unknown (expired), finished,
-- or this chunk was already counted (a duplicate delivery).
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then return -1 end
if redis.call('HEXISTS', KEYS[6], ARGV[1]) == 1 then return -1 end
local started = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
local ended = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
redis.call('HSET', KEYS[4], ARGV[1], 0)
redis.call('HSET', KEYS[5], ARGV[1], ARGV[2])
return started - 1 - ended
"""

WHILE_OPEN = """
-- KEYS: 1 job hash, 2 the hash to change; ARGV: 1 'incr' or 'end', 2 chunk key, 3 amount
-- Progress and attempt ends, only while the job is open: a late write never recreates a finished job's bookkeeping.
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[2], ARGV[3])
if ARGV[1] == 'end' then redis.call('HDEL', KEYS[3], ARGV[2]) end
return 1
"""


def job_key(job_id: str) -> str:
    return f"imsim:job:{job_id}"
