//! Small helpers: ids (UUID v7), UTC timestamps, randomness.
//!
//! Written by hand rather than pulled in from `uuid`/`time`: the agent needs a
//! handful of lines of each, and every dependency costs start-up and build time.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// 64 random bits: a per-process random hasher keyed by the OS, fed a counter.
pub(crate) fn random_u64() -> u64 {
    static STATE: std::sync::OnceLock<std::collections::hash_map::RandomState> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = STATE.get_or_init(std::collections::hash_map::RandomState::new).build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(now_unix_nanos());
    h.finish()
}

fn now_unix_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// A new UUID version 7 (time-ordered), lower-case hyphenated.
pub fn uuid_v7() -> String {
    let millis = (now_unix_nanos() / 1_000_000) as u64;
    let r1 = random_u64();
    let r2 = random_u64();
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    b[6..8].copy_from_slice(&r1.to_be_bytes()[..2]);
    b[8..16].copy_from_slice(&r2.to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x70; // version 7
    b[8] = (b[8] & 0x3f) | 0x80; // variant 10
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// A short unique tool call id, `call_` and 16 hex digits.
pub fn call_id() -> String {
    format!("call_{:016x}", random_u64())
}

/// A UTC calendar time, to the millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    /// The year (proleptic Gregorian).
    pub year: i64,
    /// 1 to 12.
    pub month: u32,
    /// 1 to 31.
    pub day: u32,
    /// 0 to 23.
    pub hour: u32,
    /// 0 to 59.
    pub minute: u32,
    /// 0 to 59.
    pub second: u32,
    /// 0 to 999.
    pub millis: u32,
}

impl UtcTime {
    /// The current time.
    pub fn now() -> UtcTime {
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        UtcTime::from_unix_millis(d.as_millis() as i64)
    }

    /// The time `ms` milliseconds after the Unix epoch (negative: before).
    pub fn from_unix_millis(ms: i64) -> UtcTime {
        let secs = ms.div_euclid(1000);
        let millis = ms.rem_euclid(1000) as u32;
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let y = yoe + era * 400;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = if month <= 2 { y + 1 } else { y };
        UtcTime { year, month, day, hour: rem / 3600, minute: rem / 60 % 60, second: rem % 60, millis }
    }

    /// RFC 3339, e.g. `2026-11-24T03:40:00.123Z`.
    pub fn rfc3339(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.millis
        )
    }

    /// For file names: `2026-11-24T03-40-00`.
    pub fn file_stamp(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}-{:02}-{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// The current time, RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    UtcTime::now().rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(UtcTime::from_unix_millis(0).rfc3339(), "1970-01-01T00:00:00.000Z");
        // 2026-11-24T03:40:00.123Z
        assert_eq!(UtcTime::from_unix_millis(1_795_491_600_123).rfc3339(), "2026-11-24T03:40:00.123Z");
        assert_eq!(UtcTime::from_unix_millis(951_782_400_000).rfc3339(), "2000-02-29T00:00:00.000Z");
        assert_eq!(UtcTime::from_unix_millis(1_795_491_600_123).file_stamp(), "2026-11-24T03-40-00");
    }

    #[test]
    fn uuids_are_v7_and_unique() {
        let a = uuid_v7();
        let b = uuid_v7();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "7");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        assert!(call_id().starts_with("call_"));
    }
}
