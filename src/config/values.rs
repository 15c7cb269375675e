//! The typed values of the configuration, each parsed by serde from the text a file or an
//! environment variable holds, with the message an operator needs when it is wrong.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc, Weekday};
use chrono_tz::Tz;
use serde::de::{self, Deserializer};
use serde::Deserialize;

/// Implements `Deserialize` from a string through `FromStr`, whose error is the message.
macro_rules! deserialize_from_str {
    ($type:ty) => {
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(de::Error::custom)
            }
        }
    };
}

/// An IANA time zone name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZoneName(pub Tz);

impl FromStr for TimeZoneName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<Tz>().map(TimeZoneName).map_err(|_| {
            format!("unknown time zone {s:?} (expected an IANA name such as Europe/Berlin)")
        })
    }
}
deserialize_from_str!(TimeZoneName);

/// The first day of a weekly window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeekStart(pub Weekday);

impl FromStr for WeekStart {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<Weekday>()
            .map(WeekStart)
            .map_err(|_| format!("{s:?} is not a day of the week (expected monday ... sunday)"))
    }
}
deserialize_from_str!(WeekStart);

/// An RFC 3339 instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instant(pub DateTime<Utc>);

impl FromStr for Instant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| Instant(t.with_timezone(&Utc)))
            .map_err(|e| format!("{s:?} is not an RFC 3339 instant ({e})"))
    }
}
deserialize_from_str!(Instant);

/// A listen address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddress(pub std::net::SocketAddr);

impl FromStr for ListenAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(ListenAddress).map_err(|_| {
            format!(
                "{s:?} is not an IP address and port (host names are not resolved here; \
                     e.g. \"127.0.0.1:9465\" or \"0.0.0.0:9465\")"
            )
        })
    }
}
deserialize_from_str!(ListenAddress);

/// A MongoDB database name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseName(pub String);

impl FromStr for DatabaseName {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, String> {
        if name.is_empty() || name.len() > 63 {
            return Err("must be 1 to 63 characters".to_owned());
        }
        match name.chars().find(|c| "/\\. \"$\0".contains(*c)) {
            Some(c) => Err(format!(
                "{name:?} contains {c:?}, which MongoDB does not allow in a database name"
            )),
            None => Ok(DatabaseName(name.to_owned())),
        }
    }
}
deserialize_from_str!(DatabaseName);

/// A MongoDB collection name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionName(pub String);

impl FromStr for CollectionName {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Err("must not be empty".to_owned());
        }
        if name.contains('$') || name.contains('\0') {
            return Err(format!("{name:?} contains '$' or a NUL character"));
        }
        if name.starts_with("system.") {
            return Err(format!("{name:?} is in the reserved system. namespace"));
        }
        Ok(CollectionName(name.to_owned()))
    }
}
deserialize_from_str!(CollectionName);

/// The bounds of one kind of duration, in seconds.
pub trait DurationBounds {
    const MIN_SECONDS: u64;
    const MAX_SECONDS: u64;
}

/// A human-readable duration (`180d`, `12h`, `90m`) within `B`'s bounds. Every duration has a
/// ceiling: time arithmetic stays far from chrono's limits, and a TTL below what MongoDB accepts
/// for `expireAfterSeconds`.
pub struct Bounded<B>(pub Duration, PhantomData<B>);

impl<B> fmt::Debug for Bounded<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<B: DurationBounds> FromStr for Bounded<B> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (min, max) = (
            Duration::from_secs(B::MIN_SECONDS),
            Duration::from_secs(B::MAX_SECONDS),
        );
        match humantime::parse_duration(s) {
            Ok(d) if d >= min && d <= max => Ok(Bounded(d, PhantomData)),
            Ok(_) => Err(format!(
                "must be between {} and {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            )),
            Err(e) => Err(format!(
                "{s:?} is not a duration ({e}; e.g. \"180d\", \"12h\")"
            )),
        }
    }
}

impl<'de, B: DurationBounds> Deserialize<'de> for Bounded<B> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

macro_rules! bounds {
    ($name:ident, $min:expr, $max:expr) => {
        pub struct $name;
        impl DurationBounds for $name {
            const MIN_SECONDS: u64 = $min;
            const MAX_SECONDS: u64 = $max;
        }
    };
}

const HOUR: u64 = 3600;
// A retention or TTL: up to MongoDB's largest expireAfterSeconds (2^31 - 1 s, about 68 years).
bounds!(RetentionBounds, 1, 2_147_483_647);
bounds!(LeaseBounds, 3, HOUR);
bounds!(GraceBounds, 0, HOUR);
bounds!(RefreshBounds, 1, HOUR);
bounds!(AggregateTimeoutBounds, 1, 24 * HOUR);
bounds!(SettleBounds, 0, HOUR);
bounds!(StuckBounds, 60, 30 * 24 * HOUR);
bounds!(RulesLookbackBounds, HOUR, 366 * 24 * HOUR);

/// A whole number within `[MIN, MAX]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count<const MIN: usize, const MAX: usize>(pub usize);

impl<'de, const MIN: usize, const MAX: usize> Deserialize<'de> for Count<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A number in the file; its text from an environment variable.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum NumberOrText {
            Number(i64),
            Text(String),
        }
        let n = match NumberOrText::deserialize(deserializer)? {
            NumberOrText::Number(n) => n,
            NumberOrText::Text(text) => text
                .trim()
                .parse::<i64>()
                .map_err(|_| de::Error::custom(format!("expected a whole number, got {text:?}")))?,
        };
        match usize::try_from(n) {
            Ok(n) if (MIN..=MAX).contains(&n) => Ok(Count(n)),
            _ => Err(de::Error::custom(format!(
                "must be between {MIN} and {MAX}, got {n}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: for<'de> Deserialize<'de>>(value: toml::Value) -> Result<T, String> {
        T::deserialize(value).map_err(|e| e.to_string())
    }

    #[test]
    fn each_value_says_what_was_expected() {
        let text = |s: &str| toml::Value::String(s.to_owned());
        assert_eq!(
            parse::<TimeZoneName>(text("Europe/Berlin")).unwrap(),
            TimeZoneName(chrono_tz::Europe::Berlin)
        );
        assert!(parse::<TimeZoneName>(text("Europe/Berln"))
            .unwrap_err()
            .contains("unknown time zone \"Europe/Berln\""));
        assert!(parse::<WeekStart>(text("someday"))
            .unwrap_err()
            .contains("is not a day of the week"));
        assert_eq!(
            parse::<Bounded<LeaseBounds>>(text("30s")).unwrap().0,
            Duration::from_secs(30)
        );
        assert!(parse::<Bounded<LeaseBounds>>(text("1s"))
            .unwrap_err()
            .contains("must be between 3s and 1h"));
        assert!(parse::<Bounded<LeaseBounds>>(text("soon"))
            .unwrap_err()
            .contains("\"soon\" is not a duration"));
        assert_eq!(
            parse::<Count<1, 8>>(toml::Value::Integer(2)).unwrap(),
            Count(2)
        );
        assert!(parse::<Count<1, 8>>(toml::Value::Integer(0))
            .unwrap_err()
            .contains("must be between 1 and 8, got 0"));
        assert!(parse::<CollectionName>(text("bad$name"))
            .unwrap_err()
            .contains("contains '$'"));
        assert!(parse::<DatabaseName>(text("a.b"))
            .unwrap_err()
            .contains("does not allow"));
        assert!(parse::<ListenAddress>(text("nowhere"))
            .unwrap_err()
            .contains("is not an IP address and port (host names are not resolved here"));
        assert!(parse::<Instant>(text("yesterday"))
            .unwrap_err()
            .contains("is not an RFC 3339 instant"));
    }
}
