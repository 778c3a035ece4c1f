"""The Lua scripts that make Redis the hub's log. Each runs atomically, so an event is in its topics'
history if and only if it was published, and a snapshot is consistent with the position it reports.

Keys, by `RedisKeys`: the sequence hash (`epoch`, `seq`), the topic registry (a sorted set scored by each
topic's last seq), the retained-state hash, and per topic `<prefix>:h:<topic>`, a stream whose entry ids
are `<seq>-0` with fields `m` (the envelope), `t` (Redis time, ms, for the age bound) and `p` (the seq of
the topic's previous event: the first retained entry's `p` says whether anything after a given id was
trimmed, exactly).
"""

from __future__ import annotations

from hub.history import RESET_EPOCH, RESET_TOO_MUCH, RESET_TRIMMED, RESET_UNKNOWN

# KEYS: sequence hash, topic registry, retained hash, this call's token (its first answer, for retries
# and Idempotency-Key). ARGV: prefix, token lifetime (s), a fresh epoch, this hub's last seen epoch and
# seq, max events per topic, max age (ms; 0 = none), the event count, the shard channel ('' on one Redis:
# each topic's own channel), the request's fingerprint, then per event: its topic count, the topics, its
# body, '1' to retain. Returns the ids joined by spaces, or '!reused' when the token answered another
# request (an Idempotency-Key sent again with other events). With no event, it publishes nothing and
# moves the counter by 0: a probe that Redis takes this script's writes again after refusing them.
# On a cluster, `prefix` carries the partition's hash tag, so every key touched lives in one slot, and
# each event goes out once on its partition's sharded channel (SPUBLISH) instead of once per topic.
PUBLISH = """
local done = redis.call('GET', KEYS[4])
if done then
  local fingerprint, ids = string.match(done, '^([^|]*)|(.*)$')
  if not fingerprint then
    return done  -- written before answers carried their request's fingerprint
  end
  if fingerprint ~= ARGV[10] then
    return '!reused'
  end
  return ids
end
local seq_key, topics_key, retained_key = KEYS[1], KEYS[2], KEYS[3]
local prefix = ARGV[1]
local epoch = redis.call('HGET', seq_key, 'epoch')
local hwm = tonumber(ARGV[5])
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', seq_key, 'epoch', epoch)
elseif epoch == ARGV[4] and tonumber(redis.call('HGET', seq_key, 'seq') or '0') < hwm then
  -- Redis came back with less than this hub had seen: ids would repeat, so start a new epoch
  epoch = ARGV[3]
  redis.call('HSET', seq_key, 'epoch', epoch, 'seq', hwm)
end
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local max_events = ARGV[6]
local max_age = tonumber(ARGV[7])
local ids = {}
local shard_channel = ARGV[9]
if tonumber(ARGV[8]) == 0 then
  redis.call('HINCRBY', seq_key, 'seq', 0)
end
local i = 11
for e = 1, tonumber(ARGV[8]) do
  local n = tonumber(ARGV[i])
  local body = ARGV[i + n + 1]
  local retain = ARGV[i + n + 2] == '1'
  local seq = redis.call('HINCRBY', seq_key, 'seq', 1)
  local id = epoch .. '-' .. seq
  local message = id .. ' ' .. body
  for c = 1, n do
    local topic = ARGV[i + c]
    local history = prefix .. ':h:' .. topic
    local prev = redis.call('ZSCORE', topics_key, topic) or '0'
    redis.call('XADD', history, 'MAXLEN', max_events, seq .. '-0', 'm', message, 't', now, 'p', prev)
    if max_age > 0 then
      local head = redis.call('XRANGE', history, '-', '+', 'COUNT', 1)[1]
      if tonumber(head[2][4]) < now - max_age then
        local last = nil
        for _, entry in ipairs(redis.call('XRANGE', history, '-', '+', 'COUNT', 100)) do
          if tonumber(entry[2][4]) >= now - max_age then
            break
          end
          last = entry[1]
        end
        redis.call('XTRIM', history, 'MINID', (tonumber(string.match(last, '^(%d+)')) + 1) .. '-0')
      end
    end
    redis.call('ZADD', topics_key, seq, topic)
    if retain then
      redis.call('HSET', retained_key, topic, message)
    end
    if shard_channel == '' then
      redis.call('PUBLISH', prefix .. ':t:' .. topic, message)
    end
  end
  if shard_channel ~= '' then
    redis.call('SPUBLISH', shard_channel, message)
  end
  ids[e] = id
  i = i + n + 3
end
local result = table.concat(ids, ' ')
redis.call('SET', KEYS[4], ARGV[10] .. '|' .. result, 'EX', ARGV[2])
return result
"""

# KEYS: sequence hash, topic registry, retained hash. ARGV: prefix, a fresh epoch, mode ('new',
# 'earliest', 'after', 'unknown'), the client's after-id epoch and seq, a channel and token to publish when
# done, the most events to replay (past it: reset 'too_much'), 'SPUBLISH' on a cluster (else 'PUBLISH'),
# this hub's evidence ('' or the epoch and seq of the newest position it received from this Redis), a
# continuity check ('' or the topic, seq and envelope of the last event the hub received: after a
# failover, the promoted replica may lack it and hand its seq out again), the exact topic count, the
# topics, the pattern count, then per pattern: its segment count, its segments joined by '/', '1' if it
# ends in `**`. Returns {epoch, seq, reset reason or '', envelopes...}.
# Only the hub's evidence can start a new epoch: the client's after-id is judged, never written, so no
# client can move the counter or the epoch that every other client's ids depend on.
# The token reaches the hub's subscriber connection after every message published before this read, so
# once it arrives, no live message older than the snapshot can still be in flight. On a cluster it also
# carries the position read, as `<token> <epoch>-<seq>`.
SNAPSHOT = """
local seq_key, topics_key, retained_key = KEYS[1], KEYS[2], KEYS[3]
local prefix = ARGV[1]
local epoch = redis.call('HGET', seq_key, 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', seq_key, 'epoch', epoch)
end
local seq = tonumber(redis.call('HGET', seq_key, 'seq') or '0')
if ARGV[10] == epoch then
  -- The hub received more than Redis holds, or its last event is not what Redis holds under that seq:
  -- Redis came back with less than it had handed out, so ids would repeat. A new epoch tells them apart.
  local lost = tonumber(ARGV[11]) > seq
  if not lost and ARGV[12] ~= '' then
    local history = prefix .. ':h:' .. ARGV[12]
    local entry = redis.call('XRANGE', history, ARGV[13] .. '-0', ARGV[13] .. '-0')[1]
    if entry then
      lost = entry[2][2] ~= ARGV[14]
    else
      local head = redis.call('XRANGE', history, '-', '+', 'COUNT', 1)[1]
      -- gone by trimming is not loss (the trimmed check below answers it); a hole is
      lost = not head or tonumber(string.match(head[1], '^(%d+)')) <= tonumber(ARGV[13])
    end
  end
  if lost then
    epoch = ARGV[2]
    seq = math.max(seq, tonumber(ARGV[11]))
    redis.call('HSET', seq_key, 'epoch', epoch, 'seq', seq)
  end
end

local function split(text)
  local out = {}
  for segment in string.gmatch(text .. '/', '([^/]*)/') do
    out[#out + 1] = segment
  end
  return out
end

local topics, seen = {}, {}
local function add(topic)
  if not seen[topic] then
    seen[topic] = true
    topics[#topics + 1] = topic
  end
end
local i = 15
for _ = 1, tonumber(ARGV[i]) do
  i = i + 1
  add(ARGV[i])
end
i = i + 1
local patterns = {}
for _ = 1, tonumber(ARGV[i]) do
  local count, text, tail = tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3] == '1'
  patterns[#patterns + 1] = {count == 0 and {} or split(text), tail}
  i = i + 3
end
if #patterns > 0 then
  for _, topic in ipairs(redis.call('ZRANGE', topics_key, 0, -1)) do
    local parts = split(topic)
    for _, pattern in ipairs(patterns) do
      local segments, tail = pattern[1], pattern[2]
      local ok = (tail and #parts >= #segments) or (#parts == #segments)
      if ok then
        for k = 1, #segments do
          if segments[k] ~= '*' and segments[k] ~= parts[k] then
            ok = false
            break
          end
        end
      end
      if ok then
        add(topic)
        break
      end
    end
  end
end

local out = {epoch, seq, ''}
local max_replay = tonumber(ARGV[8])
local function history_after(after)
  for _, topic in ipairs(topics) do
    local key = prefix .. ':h:' .. topic
    local entries = redis.call('XRANGE', key, '(' .. after .. '-0', '+', 'COUNT', max_replay + 1)
    for _, entry in ipairs(entries) do
      out[#out + 1] = entry[2][2]
    end
    if #out - 3 > max_replay then
      -- more than one reply should carry: the client resyncs from the retained state instead
      for k = #out, 4, -1 do
        out[k] = nil
      end
      out[3] = 'too_much'
      return false
    end
  end
  return true
end
local function retained()
  for _, topic in ipairs(topics) do
    local message = redis.call('HGET', retained_key, topic)
    if message then
      out[#out + 1] = message
    end
  end
end

local function done()
  if ARGV[9] == 'SPUBLISH' then
    redis.call('SPUBLISH', ARGV[6], ARGV[7] .. ' ' .. out[1] .. '-' .. out[2])
  else
    redis.call('PUBLISH', ARGV[6], ARGV[7])
  end
  return out
end

local mode = ARGV[3]
if mode == 'after' then
  local after = tonumber(ARGV[5])
  if ARGV[4] ~= epoch or after > seq then
    -- another epoch, or a position from the future: this stream alone resyncs
    out[3] = 'epoch'
  else
    for _, topic in ipairs(topics) do
      local head = redis.call('XRANGE', prefix .. ':h:' .. topic, '-', '+', 'COUNT', 1)[1]
      local lost_from
      if head then
        lost_from = tonumber(head[2][6])
      else
        lost_from = tonumber(redis.call('ZSCORE', topics_key, topic) or '0')
      end
      if lost_from > after then
        out[3] = 'trimmed'
        break
      end
    end
  end
  if out[3] == '' and history_after(after) then
    return done()
  end
elseif mode == 'earliest' then
  retained()
  if history_after(0) then
    return done()
  end
elseif mode == 'unknown' then
  out[3] = 'unknown'
end
retained()
return done()
"""

# The SNAPSHOT script's reset reason, as the client is told it.
RESETS = {
    b"": None,
    b"epoch": RESET_EPOCH,
    b"trimmed": RESET_TRIMMED,
    b"unknown": RESET_UNKNOWN,
    b"too_much": RESET_TOO_MUCH,
}
