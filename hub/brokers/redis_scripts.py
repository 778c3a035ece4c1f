"""The Lua scripts that make Redis the hub's log. Each runs atomically, so an event is in its topics'
history if and only if it was published, and a snapshot is consistent with the position it reports.

What each key holds: see `RedisKeys`; the scripts' KEYS and ARGV: `hub.brokers.script_args`.

With `history.ttl`, a topic with no publish for that long is dropped (`hub.brokers.topic_ttl`): its
stream expires, and a sweep takes it out of the registry, the name indexes and the retained hash. Seqs come
from the one counter, which outlives every topic, so a topic published again never repeats an id; the
sequence hash's `dropped` field (the drop floor) is the highest last seq of any topic dropped. A topic
that does not exist reaches back only to it, and a topic created while it is set starts with `p` at it:
it may be the continuation of one dropped. A resume from before it finds no gap it could miss.

The name indexes are written by publishes; topics an older hub wrote are indexed a batch per publish,
and until then the snapshot reads as before (an index is complete when it counts as many as the registry
or hash).
"""

from __future__ import annotations

from hub.wire.ids import RESET_EPOCH, RESET_TOO_MUCH, RESET_TRIMMED, RESET_UNKNOWN

# A counter that is not a plain integer was written by no script of this hub (an older one let a client's
# Last-Event-ID in, leaving `1e+20`): every publish failed on it, and ids issued under it cannot be trusted.
# A new epoch starts from the highest seq any topic has (a history's next entry must be above its last).
# Returns the new epoch, or nil when the counter is sound.
REPAIR_COUNTER = """
local function repair_counter(seq_key, topics_key, fresh)
  local stored = redis.call('HGET', seq_key, 'seq')
  if not stored or (#stored <= 16 and string.match(stored, '^%d+$')) then
    return nil
  end
  local top = redis.call('ZRANGE', topics_key, -1, -1, 'WITHSCORES')[2]
  top = math.max(tonumber(top or '0') or 0, tonumber(redis.call('HGET', seq_key, 'dropped') or '0') or 0)
  redis.call('HSET', seq_key, 'epoch', fresh, 'seq', math.floor(math.max(top, 0)))
  return fresh
end
"""

# KEYS and ARGV: see `hub.brokers.script_args.publish_call`. Returns the ids joined by spaces, or
# '!reused' when the token answered another request (an Idempotency-Key sent again with other events).
# With no event, it publishes nothing and moves the counter by 0: a probe that Redis takes this script's
# writes again after refusing them. On a cluster, the keys carry the partition's hash tag, so every key
# touched lives in one slot, and each event goes out once on its partition's sharded channel (SPUBLISH)
# instead of once per topic. Each topic's stream is kept set to expire between `history.ttl` and an eighth
# more after its publish.
PUBLISH = (
    REPAIR_COUNTER
    + """
local seq_key, topics_key, retained_key, token_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local names_key, retained_names_key, names_cursor_key = KEYS[5], KEYS[6], KEYS[7]
local history_prefix, channel_prefix, token_ttl = ARGV[1], ARGV[2], ARGV[3]
local fresh_epoch, seen_epoch, hwm = ARGV[4], ARGV[5], tonumber(ARGV[6])
local max_events, max_age, count = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
local shard_channel, fingerprint, ttl = ARGV[10], ARGV[11], tonumber(ARGV[12])
local i = 13  -- the first event's topic count

local done = redis.call('GET', token_key)
if done then
  local done_fingerprint, ids = string.match(done, '^([^|]*)|(.*)$')
  if not done_fingerprint then
    return done  -- written before answers carried their request's fingerprint
  end
  if done_fingerprint ~= fingerprint then
    return '!reused'
  end
  return ids
end
local epoch = repair_counter(seq_key, topics_key, fresh_epoch) or redis.call('HGET', seq_key, 'epoch')
if not epoch then
  epoch = fresh_epoch
  redis.call('HSET', seq_key, 'epoch', epoch)
elseif epoch == seen_epoch and tonumber(redis.call('HGET', seq_key, 'seq') or '0') < hwm then
  -- Redis came back with less than this hub had seen: ids would repeat, so start a new epoch
  epoch = fresh_epoch
  redis.call('HSET', seq_key, 'epoch', epoch, 'seq', hwm)
end
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local index_due = false
local floor = nil  -- the drop floor, read once a new topic needs it
local expiring = {}  -- topics whose streams are set to expire already: once per call, not per event
local ids = {}
if count == 0 then
  redis.call('HINCRBY', seq_key, 'seq', 0)
end
for e = 1, count do
  local n = tonumber(ARGV[i])
  local body = ARGV[i + n + 1]
  local retain = ARGV[i + n + 2] == '1'
  local seq = redis.call('HINCRBY', seq_key, 'seq', 1)
  index_due = index_due or seq % 16 == 0
  local id = epoch .. '-' .. seq
  local message = id .. ' ' .. body
  for c = 1, n do
    local topic = ARGV[i + c]
    local history = history_prefix .. topic
    local prev = redis.call('ZSCORE', topics_key, topic)
    local new_topic = not prev
    if new_topic then
      floor = floor or redis.call('HGET', seq_key, 'dropped') or '0'
      prev = floor
    end
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
    if new_topic then
      redis.call('ZADD', names_key, 0, topic)
    end
    if ttl > 0 and not expiring[topic] then
      expiring[topic] = true
      -- pushed an eighth of the ttl further than due, so most publishes only read it (not a write that
      -- goes to the AOF and the replicas): it expires between ttl and ttl * 9/8 after the last publish
      if redis.call('PTTL', history) < ttl then
        redis.call('PEXPIREAT', history, now + ttl + math.floor(ttl / 8))
      end
    end
    if retain and redis.call('HSET', retained_key, topic, message) == 1 then
      redis.call('ZADD', retained_names_key, 0, topic)
    end
    if shard_channel == '' then
      redis.call('PUBLISH', channel_prefix .. topic, message)
    end
  end
  if shard_channel ~= '' then
    redis.call('SPUBLISH', shard_channel, message)
  end
  ids[e] = id
  i = i + n + 3
end
-- Topics an older hub wrote (before the name indexes, or beside this one in a rolling upgrade) are
-- missing from them. Every 16th seq, a publish compares the counts and indexes the next 1,000 topics
-- of the registry by score from a cursor: nearly free on the way, complete after a few publishes.
if index_due and (redis.call('ZCARD', names_key) < redis.call('ZCARD', topics_key)
    or redis.call('ZCARD', retained_names_key) < redis.call('HLEN', retained_key)) then
  local from = redis.call('GET', names_cursor_key) or '0'
  local batch = redis.call('ZRANGEBYSCORE', topics_key, '(' .. from, '+inf', 'LIMIT', 0, 1000)
  if #batch == 0 then
    redis.call('DEL', names_cursor_key)  -- at the end, still incomplete: go round again
  else
    local last = redis.call('ZSCORE', topics_key, batch[#batch])
    if #batch == 1000 then
      -- the last seq's other topics (of one event), so the cursor can pass it
      batch = redis.call('ZRANGEBYSCORE', topics_key, '(' .. from, last)
    end
    for _, topic in ipairs(batch) do
      redis.call('ZADD', names_key, 0, topic)
      if redis.call('HEXISTS', retained_key, topic) == 1 then
        redis.call('ZADD', retained_names_key, 0, topic)
      end
    end
    redis.call('SET', names_cursor_key, last)
  end
end
local result = table.concat(ids, ' ')
redis.call('SET', token_key, fingerprint .. '|' .. result, 'EX', token_ttl)
return result
"""
)

# KEYS and ARGV: see `hub.brokers.script_args.snapshot_call`. Returns {epoch, seq, reset reason or '',
# envelopes...}: past the most events or bytes to replay, reset 'too_much'.
# Only the hub's evidence can start a new epoch: the client's after-id is judged, never written, so no
# client can move the counter or the epoch that every other client's ids depend on. The continuity check
# (the last event the hub received) catches a failover: the promoted replica may lack it and hand its seq
# out again.
# The token reaches the hub's subscriber connection after every message published before this read, so
# once it arrives, no live message older than the snapshot can still be in flight. On a cluster it also
# carries the position read, as `<token> <epoch>-<seq>`.
SNAPSHOT = (
    REPAIR_COUNTER
    + """
local seq_key, topics_key, retained_key = KEYS[1], KEYS[2], KEYS[3]
local names_key, retained_names_key = KEYS[4], KEYS[5]
local history_prefix, fresh_epoch, mode, after_epoch, after_seq = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local done_channel, token, max_replay, publish = ARGV[6], ARGV[7], tonumber(ARGV[8]), ARGV[9]
local seen_epoch, seen_seq = ARGV[10], tonumber(ARGV[11])
local last_topic, last_seq, last_message = ARGV[12], ARGV[13], ARGV[14]
local max_bytes = tonumber(ARGV[15])
local i = 16  -- the exact topic count

local epoch = repair_counter(seq_key, topics_key, fresh_epoch) or redis.call('HGET', seq_key, 'epoch')
if not epoch then
  epoch = fresh_epoch
  redis.call('HSET', seq_key, 'epoch', epoch)
end
local seq = tonumber(redis.call('HGET', seq_key, 'seq') or '0')
local dropped = tonumber(redis.call('HGET', seq_key, 'dropped') or '0')
if seen_epoch == epoch then
  -- The hub received more than Redis holds, or its last event is not what Redis holds under that seq:
  -- Redis came back with less than it had handed out, so ids would repeat. A new epoch tells them apart.
  local lost = seen_seq > seq
  if not lost and last_topic ~= '' then
    local history = history_prefix .. last_topic
    local entry = redis.call('XRANGE', history, last_seq .. '-0', last_seq .. '-0')[1]
    if entry then
      lost = entry[2][2] ~= last_message
    else
      local head = redis.call('XRANGE', history, '-', '+', 'COUNT', 1)[1]
      -- gone by trimming is not loss (the trimmed check below answers it); a hole is
      lost = not head or tonumber(string.match(head[1], '^(%d+)')) <= tonumber(last_seq)
    end
  end
  if lost then
    epoch = fresh_epoch
    seq = math.max(seq, seen_seq)
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

local exact = {}
for _ = 1, tonumber(ARGV[i]) do
  i = i + 1
  exact[#exact + 1] = ARGV[i]
end
i = i + 1
-- A pattern reads only the names under its literal prefix from an index ordered by name (a sorted set
-- of score 0): `a/b/*` those from `a/b/` to `a/b0` ('0' follows '/'), `a/**` also `a`. One that starts
-- with `*` has no prefix: it reads the whole index.
local patterns = {}
for _ = 1, tonumber(ARGV[i]) do
  local count, text, tail = tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3] == '1'
  local segments = count == 0 and {} or split(text)
  local literal = {}
  for _, segment in ipairs(segments) do
    if segment == '*' then
      break
    end
    literal[#literal + 1] = segment
  end
  local ranges = {{'-', '+'}}
  if #literal > 0 then
    local stem = table.concat(literal, '/')
    ranges = {{'[' .. stem .. '/', '(' .. stem .. '0'}}
    if #literal == #segments then
      ranges[2] = {'[' .. stem, '[' .. stem}
    end
  end
  patterns[#patterns + 1] = {segments, tail, ranges}
  i = i + 3
end

local function matches(topic)
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
      return true
    end
  end
  return false
end

-- The exact topics, then the matches of the patterns among `candidates`: a name index (by the
-- patterns' prefixes), or a list of names to test one by one.
local function gather(index, candidates)
  local topics, seen = {}, {}
  local function add(topic)
    if not seen[topic] then
      seen[topic] = true
      topics[#topics + 1] = topic
    end
  end
  for _, topic in ipairs(exact) do
    add(topic)
  end
  if #patterns == 0 then
    return topics
  end
  if index then
    for _, pattern in ipairs(patterns) do
      for _, range in ipairs(pattern[3]) do
        for _, topic in ipairs(redis.call('ZRANGEBYLEX', index, range[1], range[2])) do
          if matches(topic) then
            add(topic)
          end
        end
      end
    end
  else
    for _, topic in ipairs(candidates()) do
      if matches(topic) then
        add(topic)
      end
    end
  end
  return topics
end

-- An index that an older hub's writes left incomplete is not read until publishes have caught it up.
local function with_history(after)
  if #patterns == 0 then
    return gather()
  end
  local names = redis.call('ZCARD', names_key) == redis.call('ZCARD', topics_key)
  if after then
    -- A topic whose last seq is not after the position has nothing to replay and lost nothing
    -- since: read the registry by score instead when fewer topics changed than the prefixes hold.
    local changed = redis.call('ZCOUNT', topics_key, '(' .. after, '+inf')
    local named = 0
    if names then
      for _, pattern in ipairs(patterns) do
        for _, range in ipairs(pattern[3]) do
          named = named + redis.call('ZLEXCOUNT', names_key, range[1], range[2])
        end
      end
    end
    if not names or changed < named then
      return gather(nil, function()
        return redis.call('ZRANGEBYSCORE', topics_key, '(' .. after, '+inf')
      end)
    end
  end
  return gather(names and names_key, function()
    return redis.call('ZRANGE', topics_key, 0, -1)
  end)
end
local function with_retained()
  if #patterns == 0 then
    return gather()
  end
  local names = redis.call('ZCARD', retained_names_key) == redis.call('HLEN', retained_key)
  return gather(names and retained_names_key, function()
    return redis.call('HKEYS', retained_key)
  end)
end
local topics = {}

local out = {epoch, seq, ''}
local replayed = 0
local function history_after(after)
  for _, topic in ipairs(topics) do
    local key = history_prefix .. topic
    local start = '(' .. after .. '-0'
    repeat
      -- in slices, so that a replay past its bounds stops there rather than after reading it all
      local entries = redis.call('XRANGE', key, start, '+', 'COUNT', 256)
      local over = false
      for _, entry in ipairs(entries) do
        out[#out + 1] = entry[2][2]
        replayed = replayed + #entry[2][2]
        if replayed > max_bytes then
          over = true
          break
        end
      end
      if over or #out - 3 > max_replay then
        -- more than one reply should carry: the client resyncs from the retained state instead
        for k = #out, 4, -1 do
          out[k] = nil
        end
        out[3] = 'too_much'
        return false
      end
      if #entries > 0 then
        start = '(' .. entries[#entries][1]
      end
    until #entries < 256
  end
  return true
end
local function retained()
  for _, topic in ipairs(with_retained()) do
    local message = redis.call('HGET', retained_key, topic)
    if message then
      out[#out + 1] = message
    end
  end
end

local function done()
  if publish == 'SPUBLISH' then
    redis.call('SPUBLISH', done_channel, token .. ' ' .. out[1] .. '-' .. out[2])
  else
    redis.call('PUBLISH', done_channel, token)
  end
  return out
end

if mode == 'after' then
  local after = tonumber(after_seq)
  if after_epoch ~= epoch or after > seq then
    -- another epoch, or a position from the future: this stream alone resyncs
    out[3] = 'epoch'
  elseif #patterns > 0 and dropped > after then
    -- a topic dropped since may have matched: its name is forgotten, so no pattern can tell
    out[3] = 'trimmed'
  else
    topics = with_history(after_seq)
    for _, topic in ipairs(topics) do
      local head = redis.call('XRANGE', history_prefix .. topic, '-', '+', 'COUNT', 1)[1]
      local lost_from
      if head then
        lost_from = tonumber(head[2][6])
      else
        -- expired, and not yet swept: lost up to its last seq; swept (or never was): the drop floor
        lost_from = tonumber(redis.call('ZSCORE', topics_key, topic) or dropped)
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
  topics = with_history(nil)
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
)

# A cluster's history read on the topic's shard. KEYS and ARGV: see `script_args.history_page_call`.
HISTORY_PAGE = """
local position = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
return {position[1], position[2], redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2])}
"""

# The SNAPSHOT script's reset reason, as the client is told it.
RESETS = {
    b"": None,
    b"epoch": RESET_EPOCH,
    b"trimmed": RESET_TRIMMED,
    b"unknown": RESET_UNKNOWN,
    b"too_much": RESET_TOO_MUCH,
}
