//! [`Config`] from and to a configuration file (feature `serde`): durations and sizes as
//! people write them ("200ms", "1GiB"), the policies as strings, unknown fields refused,
//! and the same validation as [`Config::validate`], whose error names the field.
//!
//! ```toml
//! memory_size = 50000
//! batch_size = 1000
//! flush_timeout = "200ms"
//! wal_path = "/var/lib/app/queue"
//! wal_max_size = "1GiB"
//! sync_mode = "periodic(100ms)"     # or "immediate", "os"
//! overflow = "block(1s)"            # or "reject", "drop_oldest", "drop_newest"
//! retry_limit = "until_stopped"     # or a number
//! retry_backoff = { first = "100ms", max = "10s" }
//! ```

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{Config, DeadLetterFull, OverflowPolicy, RecoveryMode, SyncMode};

/// The file's shape: every field optional (a missing one keeps its default).
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memory_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    batch_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flush_timeout: Option<Text<Duration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wal_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wal_max_size: Option<Text<Size>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sync_mode: Option<Text<SyncMode>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    send_timeout: Option<Text<Duration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_limit: Option<RetryLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_backoff: Option<Backoff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shutdown_timeout: Option<Text<Duration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enable_metrics: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    overflow: Option<Text<OverflowPolicy>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recovery_mode: Option<Text<RecoveryMode>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dead_letter_max_size: Option<Text<Size>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dead_letter_full: Option<Text<DeadLetterFull>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metrics_label: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Backoff {
    first: Text<Duration>,
    max: Text<Duration>,
}

/// `retry_limit`: a number, or `"until_stopped"`.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RetryLimit {
    Count(u32),
    Named(Text<UntilStopped>),
}

struct UntilStopped;

/// A size in bytes.
#[derive(Clone, Copy)]
struct Size(u64);

/// A value written as text in the file.
struct Text<V>(V);

/// Values with a text form: parsed with a message that says what is accepted.
trait TextForm: Sized {
    /// What the text must look like, for the error message.
    const EXPECTED: &'static str;
    fn parse(s: &str) -> Option<Self>;
    fn write(&self, out: &mut String);
}

impl<V: TextForm> Serialize for Text<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = String::new();
        self.0.write(&mut out);
        serializer.serialize_str(&out)
    }
}

impl<'de, V: TextForm> Deserialize<'de> for Text<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<V: TextForm> serde::de::Visitor<'_> for Visit<V> {
            type Value = Text<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(V::EXPECTED)
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Text<V>, E> {
                V::parse(s.trim())
                    .map(Text)
                    .ok_or_else(|| E::custom(format!("{s:?}: expected {}", V::EXPECTED)))
            }
            // A bare number is accepted where it is unambiguous: a size in bytes.
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Text<V>, E> {
                self.visit_str(&n.to_string())
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Text<V>, E> {
                self.visit_str(&n.to_string())
            }
        }
        deserializer.deserialize_any(Visit(std::marker::PhantomData))
    }
}

const DURATION_UNITS: [(&str, u128); 7] = [
    ("h", 3_600_000_000_000),
    ("min", 60_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// A number (integer or with a fraction) followed by a unit, spaces allowed between.
fn number_and_unit(s: &str) -> Option<(f64, u128, &str)> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number = number.replace('_', "");
    let exact = number.parse::<u128>().ok();
    let value = number
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)?;
    Some((value, exact.unwrap_or(u128::MAX), unit.trim()))
}

impl TextForm for Duration {
    const EXPECTED: &'static str =
        "a duration: a number and a unit (ns, us, ms, s, m or min, h), e.g. \"200ms\", \"1.5s\"";

    fn parse(s: &str) -> Option<Self> {
        let (value, exact, unit) = number_and_unit(s)?;
        let unit = if unit == "µs" { "us" } else { unit };
        let (_, ns) = DURATION_UNITS.iter().find(|(u, _)| *u == unit)?;
        let nanos = if exact != u128::MAX {
            exact.checked_mul(*ns)?
        } else {
            (value * *ns as f64).round() as u128
        };
        Some(Duration::new(
            u64::try_from(nanos / 1_000_000_000).ok()?,
            (nanos % 1_000_000_000) as u32,
        ))
    }

    fn write(&self, out: &mut String) {
        let nanos = self.as_nanos();
        let (unit, per) = DURATION_UNITS
            .iter()
            .filter(|(u, _)| *u != "min")
            .find(|(_, per)| nanos.is_multiple_of(*per) && nanos > 0)
            .copied()
            .unwrap_or(("s", 1_000_000_000));
        out.push_str(&format!("{}{unit}", nanos / per));
    }
}

const SIZE_UNITS: [(&str, u64); 9] = [
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("TB", 1_000_000_000_000),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
    ("B", 1),
];

impl TextForm for Size {
    const EXPECTED: &'static str =
        "a size: bytes, or a number and a unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB), e.g. \"1GiB\"";

    fn parse(s: &str) -> Option<Self> {
        let (value, exact, unit) = number_and_unit(s)?;
        let per = if unit.is_empty() {
            1
        } else {
            SIZE_UNITS
                .iter()
                .find(|(u, _)| u.eq_ignore_ascii_case(unit))?
                .1
        };
        let bytes = if exact != u128::MAX {
            u64::try_from(exact.checked_mul(u128::from(per))?).ok()?
        } else {
            let b = value * per as f64;
            (b <= u64::MAX as f64).then_some(b.round() as u64)?
        };
        Some(Size(bytes))
    }

    fn write(&self, out: &mut String) {
        let (unit, per) = SIZE_UNITS
            .iter()
            .filter(|(u, _)| u.contains('i') || *u == "B")
            .find(|(_, per)| self.0.is_multiple_of(*per) && self.0 > 0)
            .copied()
            .unwrap_or(("B", 1));
        out.push_str(&format!("{}{unit}", self.0 / per));
    }
}

/// `name(duration)`: the argument of a policy written as a call.
fn argument<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    s.strip_prefix(name)?
        .trim()
        .strip_prefix('(')?
        .strip_suffix(')')
        .map(str::trim)
}

impl TextForm for SyncMode {
    const EXPECTED: &'static str =
        "a sync mode: \"immediate\", \"periodic(<duration>)\" such as \"periodic(100ms)\", or \"os\"";

    fn parse(s: &str) -> Option<Self> {
        match s {
            "immediate" => Some(SyncMode::Immediate),
            "os" => Some(SyncMode::Os),
            _ => Duration::parse(argument(s, "periodic")?).map(SyncMode::Periodic),
        }
    }

    fn write(&self, out: &mut String) {
        match self {
            SyncMode::Immediate => out.push_str("immediate"),
            SyncMode::Periodic(d) => {
                out.push_str("periodic(");
                d.write(out);
                out.push(')');
            }
            _ => out.push_str("os"),
        }
    }
}

impl TextForm for OverflowPolicy {
    const EXPECTED: &'static str =
        "an overflow policy: \"block(<duration>)\" such as \"block(1s)\", \
         \"reject\", \"drop_oldest\" or \"drop_newest\"";

    fn parse(s: &str) -> Option<Self> {
        match s {
            "reject" => Some(OverflowPolicy::Reject),
            "drop_oldest" => Some(OverflowPolicy::DropOldest),
            "drop_newest" => Some(OverflowPolicy::DropNewest),
            _ => Duration::parse(argument(s, "block")?).map(OverflowPolicy::Block),
        }
    }

    fn write(&self, out: &mut String) {
        match self {
            OverflowPolicy::Block(d) => {
                out.push_str("block(");
                d.write(out);
                out.push(')');
            }
            OverflowPolicy::Reject => out.push_str("reject"),
            OverflowPolicy::DropOldest => out.push_str("drop_oldest"),
            OverflowPolicy::DropNewest => out.push_str("drop_newest"),
        }
    }
}

impl TextForm for RecoveryMode {
    const EXPECTED: &'static str = "a recovery mode: \"skip_corrupt\" or \"strict\"";

    fn parse(s: &str) -> Option<Self> {
        match s {
            "skip_corrupt" => Some(RecoveryMode::SkipCorrupt),
            "strict" => Some(RecoveryMode::Strict),
            _ => None,
        }
    }

    fn write(&self, out: &mut String) {
        out.push_str(match self {
            RecoveryMode::Strict => "strict",
            _ => "skip_corrupt",
        });
    }
}

impl TextForm for DeadLetterFull {
    const EXPECTED: &'static str =
        "a policy for a full dead-letter log: \"keep_in_log\" or \"drop_oldest\"";

    fn parse(s: &str) -> Option<Self> {
        match s {
            "keep_in_log" => Some(DeadLetterFull::KeepInLog),
            "drop_oldest" => Some(DeadLetterFull::DropOldest),
            _ => None,
        }
    }

    fn write(&self, out: &mut String) {
        out.push_str(match self {
            DeadLetterFull::KeepInLog => "keep_in_log",
            DeadLetterFull::DropOldest => "drop_oldest",
        });
    }
}

impl TextForm for UntilStopped {
    const EXPECTED: &'static str = "a number of retries, or \"until_stopped\"";

    fn parse(s: &str) -> Option<Self> {
        (s == "until_stopped").then_some(UntilStopped)
    }

    fn write(&self, out: &mut String) {
        out.push_str("until_stopped");
    }
}

impl From<&Config> for ConfigFile {
    fn from(c: &Config) -> Self {
        ConfigFile {
            memory_size: Some(c.memory_size),
            batch_size: Some(c.batch_size),
            flush_timeout: Some(Text(c.flush_timeout)),
            wal_path: c.wal_path.clone(),
            wal_max_size: Some(Text(Size(c.wal_max_size))),
            sync_mode: Some(Text(c.sync_mode)),
            send_timeout: Some(Text(c.send_timeout)),
            retry_limit: c.retry_limit.map(|n| {
                if n == Config::RETRY_UNTIL_STOPPED {
                    RetryLimit::Named(Text(UntilStopped))
                } else {
                    RetryLimit::Count(n)
                }
            }),
            retry_backoff: Some(Backoff {
                first: Text(c.retry_backoff_first),
                max: Text(c.retry_backoff_max),
            }),
            shutdown_timeout: Some(Text(c.shutdown_timeout)),
            enable_metrics: Some(c.enable_metrics),
            overflow: Some(Text(c.overflow)),
            recovery_mode: Some(Text(c.recovery_mode)),
            dead_letter_max_size: c.dead_letter_max_size.map(|b| Text(Size(b))),
            dead_letter_full: Some(Text(c.dead_letter_full)),
            metrics_label: c.metrics_label.clone(),
        }
    }
}

impl ConfigFile {
    fn into_config(self) -> Config {
        let mut c = Config::default();
        let f = self;
        if let Some(v) = f.memory_size {
            c.memory_size = v;
        }
        if let Some(v) = f.batch_size {
            c.batch_size = v;
        }
        if let Some(Text(v)) = f.flush_timeout {
            c.flush_timeout = v;
        }
        if let Some(v) = f.wal_path {
            c.wal_path = Some(v);
        }
        if let Some(Text(Size(v))) = f.wal_max_size {
            c.wal_max_size = v;
        }
        if let Some(Text(v)) = f.sync_mode {
            c.sync_mode = v;
        }
        if let Some(Text(v)) = f.send_timeout {
            c.send_timeout = v;
        }
        c.retry_limit = match f.retry_limit {
            Some(RetryLimit::Count(n)) => Some(n),
            Some(RetryLimit::Named(_)) => Some(Config::RETRY_UNTIL_STOPPED),
            None => None,
        };
        if let Some(b) = f.retry_backoff {
            c.retry_backoff_first = b.first.0;
            c.retry_backoff_max = b.max.0;
        }
        if let Some(Text(v)) = f.shutdown_timeout {
            c.shutdown_timeout = v;
        }
        if let Some(v) = f.enable_metrics {
            c.enable_metrics = v;
        }
        if let Some(Text(v)) = f.overflow {
            c.overflow = v;
        }
        if let Some(Text(v)) = f.recovery_mode {
            c.recovery_mode = v;
        }
        if let Some(Text(Size(v))) = f.dead_letter_max_size {
            c.dead_letter_max_size = Some(v);
        }
        if let Some(Text(v)) = f.dead_letter_full {
            c.dead_letter_full = v;
        }
        if let Some(v) = f.metrics_label {
            c.metrics_label = Some(v);
        }
        c
    }
}

impl Serialize for Config {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ConfigFile::from(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Config {
    /// Reads a configuration (every field optional; a missing one keeps its default),
    /// refusing unknown fields, then checks it as [`Config::validate`] does.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let config = ConfigFile::deserialize(deserializer)?.into_config();
        config.validate().map_err(D::Error::custom)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_as_people_write_them() {
        let d = |s| Duration::parse(s);
        assert_eq!(d("200ms"), Some(Duration::from_millis(200)));
        assert_eq!(d("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(d("2 min"), Some(Duration::from_secs(120)));
        assert_eq!(d("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(d("250us"), Some(Duration::from_micros(250)));
        assert_eq!(d("10"), None, "a duration needs its unit");
        assert_eq!(d("5 parsecs"), None);
        assert_eq!(d("-1s"), None);
        let b = |s| Size::parse(s).map(|s| s.0);
        assert_eq!(b("1GiB"), Some(1 << 30));
        assert_eq!(b("100 MiB"), Some(100 << 20));
        assert_eq!(b("1.5KiB"), Some(1536));
        assert_eq!(b("4096"), Some(4096));
        assert_eq!(b("2GB"), Some(2_000_000_000));
        assert_eq!(b("99999999999TiB"), None, "beyond u64");
    }

    #[test]
    fn values_written_read_back_the_same() {
        for d in [
            Duration::from_millis(200),
            Duration::from_secs(90),
            Duration::from_micros(1500),
            Duration::from_nanos(7),
            Duration::ZERO,
        ] {
            let mut s = String::new();
            d.write(&mut s);
            assert_eq!(Duration::parse(&s), Some(d), "{s}");
        }
        for n in [0u64, 1, 1 << 30, 3 << 20, 1_000_000, 12_345] {
            let mut s = String::new();
            Size(n).write(&mut s);
            assert_eq!(Size::parse(&s).map(|s| s.0), Some(n), "{s}");
        }
    }
}
