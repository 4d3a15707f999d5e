//! The Lua scripts that make each check-and-update one atomic step in Redis. Time is always
//! Redis's own (`TIME`), so replicas with skewed clocks agree.

use std::sync::LazyLock;

use redis::Script;

/// `now_us()`: the server's clock in microseconds; `gcra(key, interval_us, burst, now)`: the
/// generic cell rate algorithm on the theoretical arrival time stored at `key` (expiring
/// when it has caught up, so idle keys cost nothing). Returns 0 when the request conforms,
/// else the microseconds to wait.
const PRELUDE: &str = r#"
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function gcra(key, interval, burst, now)
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - interval * burst
  if allow_at > now then return allow_at - now end
  redis.call('SET', key, string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
  return 0
end
"#;

fn with_prelude(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

/// KEYS: the limiter's key. ARGV: interval (µs), burst. Returns µs to wait (0: go).
pub static RATE: LazyLock<Script> = LazyLock::new(|| {
    with_prelude("return gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now_us())")
});

/// KEYS: block, probation. ARGV: probation interval (µs), burst. Returns {standing, ms left
/// on the block}: 0 good, 1 on probation (this attempt may authenticate), 2 refused.
pub static STANDING: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local left = redis.call('PTTL', KEYS[1])
if left <= 0 then return {0, 0} end
if gcra(KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), now_us()) == 0 then return {1, left} end
return {2, left}
"#,
    )
});

/// KEYS: failures, block. ARGV: failure interval (µs), burst, block (ms). Counts a failure;
/// past the quota the address is blocked for the block time. Returns 1 when it blocked.
pub static FAILURE: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
if gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now_us()) == 0 then return 0 end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return 1
"#,
    )
});

/// KEYS: the cap sets (global, then the tenant's). ARGV: member, ttl (ms), then each key's
/// limit. Leases are sorted-set members scored by expiry: expired ones are dropped, and when
/// every set has room the member joins all of them. Returns 0, or the 1-based index of the
/// full set.
pub static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local now = math.floor(now_us() / 1000)
local ttl = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= tonumber(ARGV[2 + i]) then return i end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, ARGV[1])
  redis.call('PEXPIRE', key, ttl)
end
return 0
"#,
    )
});

/// KEYS: one sorted set (a cap set or the call index). ARGV: ttl (ms), `XX` (renew only
/// what is there: a released lease stays released) or `CH` (re-add all, after Redis lost
/// them), members. Pushes the members' expiry to now + ttl.
pub static RENEW: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local expiry = math.floor(now_us() / 1000) + tonumber(ARGV[1])
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], ARGV[2], expiry, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 0
"#,
    )
});

/// KEYS: the call index. ARGV: the entry key prefix. Drops expired calls and returns the
/// entries of the live ones.
pub static DIRECTORY: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', math.floor(now_us() / 1000))
local sids = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
for _, sid in ipairs(sids) do
  local entry = redis.call('GET', ARGV[1] .. sid)
  if entry then table.insert(out, entry) end
end
return out
"#,
    )
});
