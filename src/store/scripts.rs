//! The Lua scripts the store runs on Redis: each a compare-and-act that must be atomic (claim
//! and release a run, delete or extend a key only while it holds a value, add to a counter and
//! give it an expiry), kept together because they are Redis's language, not Rust's.

/// Claims run `KEYS[1]` for holder `ARGV[1]` (`ARGV[2]` ms) when free, and marks the session
/// as running in `KEYS[2]` (`ARGV[3]` ms), a mark only a release removes: 0 = held by another,
/// 1 = claimed, 2 = claimed but the mark was still there (the last holder died mid-run).
pub(super) const CLAIM: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local prev = redis.call('GET', KEYS[2])
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
  if prev then return 2 end
  return 1
end
return 0
"#;

/// Releases run `KEYS[1]` and its mark `KEYS[2]` when they are holder `ARGV[1]`'s.
pub(super) const RELEASE: &str = r#"
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Deletes `KEYS[1]` when its value is `ARGV[1]`.
pub(super) const COMPARE_AND_DELETE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Extends `KEYS[1]` by `ARGV[2]` ms when its value is `ARGV[1]`.
pub(super) const COMPARE_AND_EXPIRE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// Adds `ARGV[1]` to `KEYS[1]`, sets its expiry to `ARGV[2]` ms when it has none; the total.
pub(super) const ADD_AND_EXPIRE: &str = r#"
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return n
"#;
