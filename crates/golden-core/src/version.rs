//! Image versions: the UTC time a bake started, as `YYYYMMDDTHHMMSSZ` (e.g. `20261125T011500Z`).
//!
//! A fixed-width, zero-padded timestamp sorts as a string exactly as it sorts in time, so versions can be
//! compared, stored in tags and S3 keys, and listed by anything without parsing them first.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

/// chrono format of a version; also how `created_at` is read back.
const FORMAT: &str = "%Y%m%dT%H%M%SZ";
/// The format as people read it, for error messages.
const HUMAN_FORMAT: &str = "YYYYMMDDTHHMMSSZ (UTC, e.g. 20261125T011500Z)";

/// A validated version string. Ordering (derived on the string) is chronological because the format is
/// fixed-width.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version(String);

/// A string that is not a version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version {value:?}: expected {HUMAN_FORMAT}{detail}")]
pub struct VersionError {
    /// The rejected text.
    pub value: String,
    detail: String,
}

impl VersionError {
    fn new(value: &str, detail: &str) -> Self {
        VersionError {
            value: value.to_owned(),
            detail: if detail.is_empty() {
                String::new()
            } else {
                format!("; {detail}")
            },
        }
    }
}

impl Version {
    /// The version of a bake started at `at`; sub-second precision is dropped.
    ///
    /// Years past 9999 do not fit the format; they are clamped to the last representable second so the
    /// result still parses (no bake will ever see them).
    pub fn from_datetime(at: DateTime<Utc>) -> Version {
        let last = NaiveDateTime::parse_from_str("99991231T235959Z", FORMAT).map(|n| n.and_utc());
        let at = match last {
            Ok(last) if at > last => last,
            _ => at,
        };
        Version(at.format(FORMAT).to_string())
    }

    /// Parses a version strictly: exactly 16 characters in the format above, and a real date and time
    /// (no month 13, no February 30, no leap second).
    pub fn parse(s: &str) -> Result<Version, VersionError> {
        let b = s.as_bytes();
        let shape_ok = b.len() == 16
            && b[8] == b'T'
            && b[15] == b'Z'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 8 || i == 15 || c.is_ascii_digit());
        if !shape_ok {
            return Err(VersionError::new(s, ""));
        }
        let parsed = NaiveDateTime::parse_from_str(s, FORMAT)
            .map_err(|_| VersionError::new(s, "not a valid date and time"))?;
        // chrono accepts second 60 as a leap second, which no clock we use produces.
        if &s[13..15] > "59" || parsed.format(FORMAT).to_string() != s {
            return Err(VersionError::new(s, "not a valid date and time"));
        }
        Ok(Version(s.to_owned()))
    }

    /// The version text, e.g. for tags and image names.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// When the bake that made this version started.
    pub fn created_at(&self) -> DateTime<Utc> {
        // Every Version was validated on construction, so this parse cannot fail; the fallback only
        // keeps the signature infallible.
        NaiveDateTime::parse_from_str(&self.0, FORMAT)
            .map(|n| n.and_utc())
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Version {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

impl TryFrom<String> for Version {
    type Error = VersionError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Version::parse(&s)
    }
}

impl From<Version> for String {
    fn from(v: Version) -> String {
        v.0
    }
}

impl AsRef<str> for Version {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn from_datetime_formats_utc_and_drops_subseconds() {
        let at = Utc.with_ymd_and_hms(2026, 11, 25, 1, 15, 0).unwrap()
            + chrono::Duration::milliseconds(999);
        let version = Version::from_datetime(at);
        assert_eq!(version.as_str(), "20261125T011500Z");
        assert_eq!(
            version.created_at(),
            Utc.with_ymd_and_hms(2026, 11, 25, 1, 15, 0).unwrap()
        );
    }

    #[test]
    fn parse_accepts_valid_versions() {
        for s in [
            "20261125T011500Z",
            "20240229T235959Z",
            "00010101T000000Z",
            "99991231T235959Z",
        ] {
            assert_eq!(v(s).to_string(), s);
        }
    }

    #[test]
    fn parse_rejects_bad_shapes_and_impossible_dates() {
        let cases = [
            ("", ""),
            ("20261125T011500", ""),            // no Z
            ("20261125t011500Z", ""),           // lowercase t
            ("2026-11-25T01:15:00Z", ""),       // RFC 3339 is not a version
            ("20261125T011500Z ", ""),          // trailing space
            ("+0261125T011500Z", ""),           // sign where a digit belongs
            ("２0261125T011500Z", ""),          // non-ASCII digit
            ("20261325T011500Z", "valid date"), // month 13
            ("20230229T000000Z", "valid date"), // not a leap year
            ("20261125T240000Z", "valid date"), // hour 24
            ("20261125T236000Z", "valid date"), // minute 60
            ("20261231T235960Z", "valid date"), // leap second
        ];
        for (input, detail) in cases {
            let err = Version::parse(input).expect_err(input);
            let msg = err.to_string();
            assert!(msg.contains(&format!("{input:?}")), "{msg} names the value");
            assert!(msg.contains("YYYYMMDDTHHMMSSZ"), "{msg} names the format");
            assert!(msg.contains(detail), "{msg} should contain {detail}");
        }
    }

    #[test]
    fn serde_is_a_plain_string_validated_on_deserialize() {
        let json = serde_json::to_string(&v("20261125T011500Z")).unwrap();
        assert_eq!(json, "\"20261125T011500Z\"");
        assert_eq!(
            serde_json::from_str::<Version>(&json).unwrap(),
            v("20261125T011500Z")
        );
        let err = serde_json::from_str::<Version>("\"2026-11-25\"").unwrap_err();
        assert!(
            err.to_string().contains("expected YYYYMMDDTHHMMSSZ"),
            "{err}"
        );
    }

    #[test]
    fn from_str_matches_parse() {
        assert_eq!(
            "20261125T011500Z".parse::<Version>().unwrap(),
            v("20261125T011500Z")
        );
        assert!("nope".parse::<Version>().is_err());
    }

    proptest! {
        #[test]
        fn string_order_is_chronological_order(a in 0i64..253_402_300_799, b in 0i64..253_402_300_799) {
            let (ta, tb) = (Utc.timestamp_opt(a, 0).unwrap(), Utc.timestamp_opt(b, 0).unwrap());
            let (va, vb) = (Version::from_datetime(ta), Version::from_datetime(tb));
            prop_assert_eq!(va.cmp(&vb), ta.cmp(&tb));
            prop_assert_eq!(va.as_str().cmp(vb.as_str()), ta.cmp(&tb));
            prop_assert_eq!(va.created_at(), ta);
            prop_assert_eq!(Version::parse(va.as_str()).unwrap(), va);
        }
    }
}
