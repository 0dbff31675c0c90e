"""The two Lua scripts every limited request runs: one to take, one to settle.

`RESERVE` checks every limit and budget of a request and takes them all or none, in
one round trip, atomic across every gateway process and machine (Redis runs a script
alone). The clock is the Redis server's (TIME), so machines whose clocks disagree
still share one window.

One key per check; the checks themselves come in one ARGV string (ARGV[3]), one
`kind,a,b,c,d` per check separated by `;` (a few arguments instead of five per check:
packing arguments is most of what a script call costs the gateway). ARGV[1] and [2] are
the request's lease id and the lease's length in ms. Kinds:

- `g`, a rate (requests per minute or day, tokens per minute): GCRA, the generic cell
  rate algorithm. The key holds the theoretical arrival time (TAT, ms); a limit of n per
  period P lets a request of cost c through when TAT + c·P/n - P <= now, so n fit in a
  burst and then one every P/n: no fixed window, no 2× at a boundary. `g,n,P,c,`
- `c`, concurrent requests: a sorted set of leases scored by expiry. Expired leases are
  dropped first, so a process that died holding slots gives them back after the lease
  time, never leaks them forever. `c,n,,,` takes one slot, named by the lease id;
  `c,n,count,,` takes `count` (a process's block of slots, ratelimit.gate.Block), named
  `<lease>#1` to `<lease>#count`, all or none.
- `b`, a budget: a hash {s: spend so far (units of 1e-8 USD, reservations included),
  g: generation, x: crossed}. Missing means Redis lost it (flushed, restarted, evicted):
  the script then takes nothing and returns the indexes to seed; the caller sums the
  period's spend from PostgreSQL and runs it again with the seed. A hard budget refuses
  while s >= cap, so concurrent requests overrun it by at most one reservation; a block
  taken ahead (hard 2) is refused unless all of it fits under the cap, so it never
  overruns at all. `b,cap,estimate,hard (1/0/2),seed` with seed '' or
  `spend:generation:ttl`.

A kind in capitals (`G`, `C`, `B`) only checks: it answers as its lower-case kind would
(a rate with the cost given) but takes nothing, so a request can be refused before the
cache for a limit that a cache hit would not spend (tokens, spend, a slot in flight),
and take those only when it goes upstream (ratelimit.gate says why).

Returns {-1, i, ...} (seed budgets i first), or 5 values per check: ok (1/0), remaining,
reset ms, retry ms, generation.
"""

RESERVE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
local lease, lease_ms = ARGV[1], tonumber(ARGV[2])
local checks = {}
for kind, a, b, c, d in string.gmatch(ARGV[3], '(%a),([^,;]*),([^,;]*),([^,;]*),([^;]*)') do
  checks[#checks + 1] = {kind, tonumber(a), tonumber(b), tonumber(c), d}
end
local out, missing, take = {}, {}, {}
local all_ok = true
for i, check in ipairs(checks) do
  local kind, n, key = check[1], check[2], KEYS[i]
  local only_check = kind < 'a'
  if only_check then kind = string.lower(kind) end
  local ok, remaining, reset, retry, gen = 1, 0, 0, 0, ''
  if kind == 'g' then
    local period, cost = check[3], check[4]
    local step = period / n
    local tat = tonumber(redis.call('GET', key)) or now
    if tat < now then tat = now end
    local after = tat + cost * step
    if after - period > now then
      ok, retry = 0, math.ceil(after - period - now)
      remaining, reset = math.floor((period - (tat - now)) / step), math.ceil(tat - now)
    elseif only_check then
      remaining, reset = math.floor((period - (tat - now)) / step), math.ceil(tat - now)
    else
      take[i] = after
      remaining, reset = math.floor((period - (after - now)) / step), math.ceil(after - now)
    end
  elseif only_check and kind == 'c' then
    local count = redis.call('ZCOUNT', key, '(' .. now, '+inf')
    if count >= n then ok, remaining = 0, 0 else remaining = n - count end
  elseif kind == 'c' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local count, want = redis.call('ZCARD', key), check[3] or 1
    if count + want > n then
      ok, remaining = 0, 0
    else
      remaining = n - count - want
      take[i] = want
    end
  else
    local found = redis.call('HMGET', key, 's', 'g')
    local spent = found[1]
    gen = found[2] or ''
    if not spent then
      if check[5] == '' then
        missing[#missing + 1] = i
      else
        local s, g, ttl = string.match(check[5], '^([^:]+):([^:]+):([^:]+)$')
        redis.call('HSET', key, 's', s, 'g', g)
        redis.call('EXPIRE', key, ttl)
        spent, gen = s, g
      end
    end
    if spent then
      spent = tonumber(spent)
      remaining = n - spent
      local hard = check[4]
      if (hard == 1 and spent >= n) or (hard == 2 and spent + check[3] > n) then
        ok = 0
      elseif not only_check then
        take[i] = check[3]
      end
    end
  end
  if ok == 0 then all_ok = false end
  out[#out + 1] = ok
  out[#out + 1] = remaining
  out[#out + 1] = reset
  out[#out + 1] = retry
  out[#out + 1] = gen
end
if #missing > 0 then
  table.insert(missing, 1, -1)
  return missing
end
if all_ok then
  for i, value in pairs(take) do
    local kind, key = checks[i][1], KEYS[i]
    if kind == 'g' then
      if value > now then
        redis.call('SET', key, string.format('%.3f', value), 'PX', math.ceil(value - now))
      end
    elseif kind == 'c' then
      if value == 1 then
        redis.call('ZADD', key, now + lease_ms, lease)
      else
        local members = {}
        for j = 1, value do
          members[#members + 1] = now + lease_ms
          members[#members + 1] = lease .. '#' .. j
        end
        redis.call('ZADD', key, unpack(members))
      end
      redis.call('PEXPIRE', key, lease_ms)
    elseif value > 0 then
      redis.call('HINCRBY', key, 's', value)
    end
  end
end
return out
"""

# Settles what requests took, many at once (a flush batches one organization's): one
# key per item, the items in ARGV[1] as `kind,a,b,c` separated by `;`:
# - `g,ms per unit,delta units,`  (a negative delta gives back what was not used)
# - `c,lease ids,,`               (space-separated: free these slots of one limit)
# - `b,delta units,cap,generation` (reservation -> real cost)
# A budget whose generation changed (Redis lost it and it was rebuilt from the records
# meanwhile) is left alone: the rebuilt spend does not hold this reservation, and the
# request's real cost reaches it through its record. Returns {i, spend} for each budget
# whose spend reached its cap here for the first time in its period.
SETTLE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
local crossed = {}
local i = 0
for kind, a, b, c in string.gmatch(ARGV[1], '(%a),([^,;]*),([^,;]*),([^;]*)') do
  i = i + 1
  local key = KEYS[i]
  if kind == 'g' then
    local step, delta = tonumber(a), tonumber(b)
    local tat = tonumber(redis.call('GET', key))
    if tat or delta > 0 then
      if not tat or tat < now then tat = now end
      local after = tat + delta * step
      if after > now then
        redis.call('SET', key, string.format('%.3f', after), 'PX', math.ceil(after - now))
      else
        redis.call('DEL', key)
      end
    end
  elseif kind == 'c' then
    local names = {}
    for name in string.gmatch(a, '%S+') do names[#names + 1] = name end
    redis.call('ZREM', key, unpack(names))
  elseif redis.call('HGET', key, 'g') == c then
    local spent = redis.call('HINCRBY', key, 's', a)
    if spent >= tonumber(b) and redis.call('HSETNX', key, 'x', 1) == 1 then
      crossed[#crossed + 1] = i
      crossed[#crossed + 1] = spent
    end
  end
end
return crossed
"""
