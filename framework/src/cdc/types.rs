//! Debezium's semantic types as Rust types.
//!
//! Use them as field types of a row struct; each reads the form Debezium
//! writes in JSON and writes it back the same way, so rows round-trip
//! through stores and topics unchanged.
//!
//! | Debezium / Kafka Connect type | JSON form | Rust type |
//! |---|---|---|
//! | `org.apache.kafka.connect.data.Decimal` | base64 bytes + `scale` | [`Decimal`] |
//! | `io.debezium.data.VariableScaleDecimal` | `{"scale":…,"value":…}` | [`Decimal`] |
//! | `io.debezium.time.Date` | days since the epoch | [`Date`] |
//! | `io.debezium.time.Time` | milliseconds since midnight | [`Time`] |
//! | `io.debezium.time.MicroTime` | microseconds since midnight | [`MicroTime`] |
//! | `io.debezium.time.Timestamp` | milliseconds since the epoch | [`Timestamp`] |
//! | `io.debezium.time.MicroTimestamp` | microseconds since the epoch | [`MicroTimestamp`] |
//! | `io.debezium.time.NanoTimestamp` | nanoseconds since the epoch | [`NanoTimestamp`] |
//! | `io.debezium.time.ZonedTimestamp` | ISO-8601 text with offset | [`ZonedTimestamp`] |
//! | `io.debezium.data.Json` | JSON document as text | [`JsonText`] |
//! | `io.debezium.data.Enum` | the label as text | a `String`, or your own enum |
//!
//! A `Decimal` in Debezium's default `precise` mode is base64 bytes whose
//! scale is in the schema. With the schema wrapper the decoder reads the
//! scale from the schema; without it, tell the decoder the scale with
//! [`JsonEvents::decimal_scale`](super::JsonEvents::decimal_scale).
//! `decimal.handling.mode=string` and `double` need nothing.
//!
//! ```
//! use weir::cdc::{Decimal, Date, MicroTimestamp, JsonText};
//! #[derive(serde::Deserialize, Debug)]
//! #[serde(rename_all = "lowercase")]
//! enum Status { Active, Banned }
//!
//! #[derive(serde::Deserialize, Debug)]
//! struct Account {
//!     balance: Decimal,
//!     opened: Date,
//!     last_login: Option<MicroTimestamp>,
//!     settings: JsonText<serde_json::Value>,
//!     status: Status,
//! }
//! let row: Account = serde_json::from_str(r#"{"balance":"1234.50","opened":19000,
//!     "last_login":1700000000123456,"settings":"{\"theme\":\"dark\"}","status":"active"}"#).unwrap();
//! assert_eq!(row.balance.to_string(), "1234.50");
//! assert_eq!(row.opened.to_string(), "2022-01-08");
//! assert_eq!(row.settings.0["theme"], "dark");
//! ```

use base64::Engine;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use num_bigint::{BigInt, Sign};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// An exact decimal number: `unscaled × 10^-scale`, as wide as Debezium
/// writes them (MySQL's `DECIMAL(65, 30)`, PostgreSQL's `numeric`).
///
/// Two decimals are equal when both their unscaled value and their scale
/// are (`1.50` and `1.5` differ), as values of one SQL column always share
/// one scale. Decimals stay within PostgreSQL's limits, the widest of the
/// databases Debezium reads: at most [`Decimal::MAX_SCALE`] digits after
/// the point and an unscaled value of at most [`Decimal::MAX_BITS`] bits
/// (text: [`Decimal::MAX_DIGITS`] digits); anything wider is an error, so
/// that a record cannot make weir build text of any size.
///
/// ```
/// use weir::cdc::Decimal;
/// // Debezium's precise mode: big-endian two's complement bytes, base64.
/// let price = Decimal::from_base64("MDk=", 2).unwrap();
/// assert_eq!(price.to_string(), "123.45");
/// assert_eq!("-0.05".parse::<Decimal>().unwrap(), Decimal::new(-5, 2).unwrap());
/// assert!(Decimal::from_base64("MDk=", 100_000).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decimal {
    unscaled: BigInt,
    scale: u32,
}

/// Why text or bytes are not a [`Decimal`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a decimal: {0}")]
pub struct DecimalError(String);

impl Decimal {
    /// The most digits after the point (PostgreSQL's largest display scale).
    pub const MAX_SCALE: u32 = 16_383;
    /// The most digits in all (PostgreSQL's 131,072 before the point and
    /// 16,383 after).
    pub const MAX_DIGITS: u64 = 147_455;
    /// The most bits of an unscaled value: those of `10^MAX_DIGITS - 1`.
    pub const MAX_BITS: u64 = 489_835;

    /// `unscaled × 10^-scale`, or an error beyond the limits above.
    pub fn new(unscaled: impl Into<BigInt>, scale: u32) -> Result<Self, DecimalError> {
        let unscaled = unscaled.into();
        if scale > Self::MAX_SCALE {
            return Err(DecimalError(format!(
                "scale {scale} exceeds the largest supported scale, {}",
                Self::MAX_SCALE
            )));
        }
        if unscaled.bits() > Self::MAX_BITS {
            return Err(DecimalError(format!(
                "{} bits exceed the {} digits supported",
                unscaled.bits(),
                Self::MAX_DIGITS
            )));
        }
        Ok(Decimal { unscaled, scale })
    }

    pub fn unscaled(&self) -> &BigInt {
        &self.unscaled
    }

    pub fn scale(&self) -> u32 {
        self.scale
    }

    /// From big-endian two's complement bytes, as Kafka Connect encodes them.
    pub fn from_be_bytes(bytes: &[u8], scale: u32) -> Result<Self, DecimalError> {
        if bytes.len() as u64 * 8 > Self::MAX_BITS + 8 {
            return Err(DecimalError(format!(
                "{} bytes exceed the {} digits supported",
                bytes.len(),
                Self::MAX_DIGITS
            )));
        }
        Self::new(BigInt::from_signed_bytes_be(bytes), scale)
    }

    /// From base64 text of big-endian two's complement bytes.
    pub fn from_base64(text: &str, scale: u32) -> Result<Self, DecimalError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| DecimalError(format!("'{}' is not base64: {e}", abbreviated(text))))?;
        Self::from_be_bytes(&bytes, scale)
    }

    /// The shortest big-endian two's complement encoding of the unscaled value.
    pub fn to_be_bytes(&self) -> Vec<u8> {
        self.unscaled.to_signed_bytes_be()
    }

    /// The nearest `f64` (infinite beyond its range).
    pub fn to_f64(&self) -> f64 {
        self.to_string().parse().unwrap_or(f64::NAN)
    }
}

/// At most the first 40 characters of `text`, for error messages.
fn abbreviated(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("{}…", &text[..end]).into(),
        None => text.into(),
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.unscaled.magnitude().to_string();
        if self.unscaled.sign() == Sign::Minus {
            f.write_str("-")?;
        }
        let scale = self.scale as usize;
        if scale == 0 {
            return f.write_str(&digits);
        }
        if digits.len() > scale {
            let (int, frac) = digits.split_at(digits.len() - scale);
            return write!(f, "{int}.{frac}");
        }
        // No formatting width here: widths over 65,535 panic.
        f.write_str("0.")?;
        for _ in digits.len()..scale {
            f.write_str("0")?;
        }
        f.write_str(&digits)
    }
}

impl FromStr for Decimal {
    type Err = DecimalError;

    fn from_str(text: &str) -> Result<Self, DecimalError> {
        let bad = |why: &str| DecimalError(format!("'{}': {why}", abbreviated(text)));
        let (negative, body) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        if int.is_empty() && frac.is_empty() {
            return Err(bad("no digits"));
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad("only digits, a sign and one point are allowed"));
        }
        if frac.len() > Self::MAX_SCALE as usize {
            return Err(bad(&format!(
                "{} digits after the point exceed the largest supported scale, {}",
                frac.len(),
                Self::MAX_SCALE
            )));
        }
        if (int.len() + frac.len()) as u64 > Self::MAX_DIGITS {
            return Err(bad(&format!("more than {} digits", Self::MAX_DIGITS)));
        }
        let mut digits = String::with_capacity(int.len() + frac.len() + 1);
        digits.push(if negative { '-' } else { '+' });
        digits.push_str(int);
        digits.push_str(frac);
        let unscaled = BigInt::from_str(&digits).map_err(|e| bad(&e.to_string()))?;
        Decimal::new(unscaled, frac.len() as u32)
    }
}

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DecimalVisitor;
        impl<'de> Visitor<'de> for DecimalVisitor {
            type Value = Decimal;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a decimal as text, a number, or {\"scale\", \"value\"}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Decimal, E> {
                v.parse().map_err(|e: DecimalError| {
                    E::custom(format!(
                        "{e}; a base64 decimal (decimal.handling.mode=precise) needs its scale: send the schema \
                         or set JsonEvents::decimal_scale"
                    ))
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Decimal, E> {
                Decimal::new(v, 0).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Decimal, E> {
                Decimal::new(v, 0).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Decimal, E> {
                if !v.is_finite() {
                    return Err(E::custom(format!("{v} is not a decimal")));
                }
                // Display prints the shortest text that reads back as `v`.
                v.to_string().parse().map_err(E::custom)
            }
            // io.debezium.data.VariableScaleDecimal
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Decimal, A::Error> {
                let (mut scale, mut value) = (None::<u32>, None::<String>);
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match &*key {
                        "scale" => scale = Some(map.next_value()?),
                        "value" => value = Some(map.next_value()?),
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                let (scale, value) = scale
                    .zip(value)
                    .ok_or_else(|| de::Error::custom("a variable-scale decimal needs 'scale' and 'value'"))?;
                Decimal::from_base64(&value, scale).map_err(de::Error::custom)
            }
        }
        deserializer.deserialize_any(DecimalVisitor)
    }
}

/// Defines a newtype over a chrono type that reads and writes Debezium's
/// representation `$repr` through the conversions `$from` and `$to`.
macro_rules! debezium_time {
    ($(#[$doc:meta])* $name:ident($chrono:ty) as $repr:ty, $from:expr, $to:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $chrono);

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let to: fn(&$chrono) -> Option<$repr> = $to;
                let repr = to(&self.0).ok_or_else(|| {
                    serde::ser::Error::custom(format!("{} is out of range for {}", self.0, stringify!($name)))
                })?;
                repr.serialize(serializer)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let repr = <$repr>::deserialize(deserializer)?;
                let from: fn(&$repr) -> Option<$chrono> = $from;
                from(&repr)
                    .map($name)
                    .ok_or_else(|| de::Error::custom(format!("{} is not a valid {}", repr, stringify!($name))))
            }
        }

        impl From<$name> for $chrono {
            fn from(value: $name) -> $chrono {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();

fn time_from_micros(micros: i64) -> Option<NaiveTime> {
    let seconds = u32::try_from(micros.div_euclid(1_000_000)).ok()?;
    let nanos = (micros.rem_euclid(1_000_000) * 1000) as u32;
    (micros >= 0).then(|| NaiveTime::from_num_seconds_from_midnight_opt(seconds, nanos))?
}

fn micros_of_day(time: &NaiveTime) -> i64 {
    time.num_seconds_from_midnight() as i64 * 1_000_000 + (time.nanosecond() / 1000) as i64
}

debezium_time!(
    /// `io.debezium.time.Date`: days since 1970-01-01.
    Date(NaiveDate) as i32,
    |days| EPOCH.checked_add_signed(chrono::TimeDelta::try_days(*days as i64)?),
    |date| i32::try_from(date.signed_duration_since(EPOCH).num_days()).ok()
);
debezium_time!(
    /// `io.debezium.time.Time`: milliseconds since midnight.
    Time(NaiveTime) as i32,
    |millis| time_from_micros(*millis as i64 * 1000),
    |time| i32::try_from(micros_of_day(time) / 1000).ok()
);
debezium_time!(
    /// `io.debezium.time.MicroTime`: microseconds since midnight.
    MicroTime(NaiveTime) as i64,
    |micros| time_from_micros(*micros),
    |time| Some(micros_of_day(time))
);
debezium_time!(
    /// `io.debezium.time.Timestamp`: milliseconds since the epoch, no time zone.
    Timestamp(NaiveDateTime) as i64,
    |millis| DateTime::from_timestamp_millis(*millis).map(|t| t.naive_utc()),
    |t| Some(t.and_utc().timestamp_millis())
);
debezium_time!(
    /// `io.debezium.time.MicroTimestamp`: microseconds since the epoch, no time zone.
    MicroTimestamp(NaiveDateTime) as i64,
    |micros| DateTime::from_timestamp_micros(*micros).map(|t| t.naive_utc()),
    |t| Some(t.and_utc().timestamp_micros())
);
debezium_time!(
    /// `io.debezium.time.NanoTimestamp`: nanoseconds since the epoch, no time zone.
    NanoTimestamp(NaiveDateTime) as i64,
    |nanos| Some(DateTime::from_timestamp_nanos(*nanos).naive_utc()),
    |t| t.and_utc().timestamp_nanos_opt()
);
debezium_time!(
    /// `io.debezium.time.ZonedTimestamp`: ISO-8601 text with an offset.
    ZonedTimestamp(DateTime<FixedOffset>) as String,
    |text| DateTime::parse_from_rfc3339(text).ok(),
    |t| Some(t.to_rfc3339())
);

/// `io.debezium.data.Json`: a JSON document carried as text, parsed into `T`.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonText<T = serde_json::Value>(pub T);

impl<T: Serialize> Serialize for JsonText<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(&self.0).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for JsonText<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        serde_json::from_str(&text)
            .map(JsonText)
            .map_err(|e| de::Error::custom(format!("invalid JSON document in a Json column: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decimal_reads_kafka_connect_bytes() {
        // 12345 = 0x3039; -12345 = 0xCFC7; 128 needs a leading zero byte.
        assert_eq!(Decimal::from_be_bytes(&[0x30, 0x39], 2).unwrap().to_string(), "123.45");
        assert_eq!(Decimal::from_be_bytes(&[0xCF, 0xC7], 2).unwrap().to_string(), "-123.45");
        assert_eq!(Decimal::from_be_bytes(&[0x00, 0x80], 0).unwrap().to_string(), "128");
        assert_eq!(Decimal::from_be_bytes(&[0x80], 0).unwrap().to_string(), "-128");
        assert_eq!(Decimal::from_be_bytes(&[], 3).unwrap().to_string(), "0.000");
        assert_eq!(Decimal::from_be_bytes(&[0x05], 4).unwrap().to_string(), "0.0005");
        assert_eq!(Decimal::from_be_bytes(&[0xfb], 4).unwrap().to_string(), "-0.0005");
        assert!(Decimal::from_base64("not base64!", 2).is_err());
    }

    #[test]
    fn decimal_reads_mysql_decimal_65_30() {
        let text = format!("-{}.{}", "9".repeat(35), "1".repeat(30));
        let decimal: Decimal = text.parse().unwrap();
        assert_eq!(decimal.scale(), 30);
        assert_eq!(decimal.to_string(), text);
        let bytes = decimal.to_be_bytes();
        assert_eq!(bytes.len(), 28, "65 digits and a sign bit take 28 bytes");
        assert_eq!(Decimal::from_be_bytes(&bytes, 30).unwrap(), decimal);
    }

    #[test]
    fn decimal_scales_and_widths_from_the_data_are_bounded() {
        // A scale read from a record's schema wrapper, past what a
        // formatting width allows.
        let err = Decimal::from_be_bytes(&[0x01], 100_000).unwrap_err().to_string();
        assert!(err.contains("scale 100000"), "{err}");
        let err = format!("0.{}", "1".repeat(70_000))
            .parse::<Decimal>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("70000 digits after the point"), "{err}");
        assert!(err.len() < 200, "the message quotes the text abbreviated: {err}");
        assert!("9".repeat(Decimal::MAX_DIGITS as usize + 1).parse::<Decimal>().is_err());
        assert!(Decimal::from_be_bytes(&vec![0x7f; 70_000], 0).is_err());
        // The widest allowed still reads and prints.
        let widest = Decimal::from_be_bytes(&[0x01], Decimal::MAX_SCALE).unwrap();
        let text = widest.to_string();
        assert_eq!(text.len(), Decimal::MAX_SCALE as usize + 2);
        assert_eq!(text.parse::<Decimal>().unwrap(), widest);
        let longest: Decimal = "9".repeat(Decimal::MAX_DIGITS as usize).parse().unwrap();
        assert_eq!(Decimal::from_be_bytes(&longest.to_be_bytes(), 0).unwrap(), longest);
    }

    #[test]
    fn decimal_text_rejects_garbage() {
        for bad in ["", "-", "1.2.3", "12a", "1e5", ".", "+-1", "1.-2", " 1"] {
            assert!(bad.parse::<Decimal>().is_err(), "{bad}");
        }
    }

    #[test]
    fn decimal_reads_every_debezium_mode() {
        let d: Decimal = serde_json::from_str("\"-7.25\"").unwrap();
        assert_eq!(d, Decimal::new(-725, 2).unwrap());
        let d: Decimal = serde_json::from_str("7.25").unwrap();
        assert_eq!(d, Decimal::new(725, 2).unwrap());
        let d: Decimal = serde_json::from_str("42").unwrap();
        assert_eq!(d, Decimal::new(42, 0).unwrap());
        let d: Decimal = serde_json::from_str(r#"{"scale":3,"value":"MDk="}"#).unwrap();
        assert_eq!(d.to_string(), "12.345");
        assert!(serde_json::from_str::<Decimal>(r#"{"scale":99999,"value":"MDk="}"#).is_err());
        let err = serde_json::from_str::<Decimal>("\"MDk=\"").unwrap_err().to_string();
        assert!(err.contains("decimal_scale"), "{err}");
    }

    #[test]
    fn times_read_debezium_units() {
        let date: Date = serde_json::from_str("-1").unwrap();
        assert_eq!(date.to_string(), "1969-12-31");
        let t: MicroTime = serde_json::from_str("3723000004").unwrap();
        assert_eq!(t.to_string(), "01:02:03.000004");
        let t: Time = serde_json::from_str("3723005").unwrap();
        assert_eq!(t.to_string(), "01:02:03.005");
        assert!(serde_json::from_str::<MicroTime>("-1").is_err());
        assert!(serde_json::from_str::<MicroTime>("86400000000").is_err());
        let ts: Timestamp = serde_json::from_str("1700000000123").unwrap();
        assert_eq!(ts.to_string(), "2023-11-14 22:13:20.123");
        let ts: MicroTimestamp = serde_json::from_str("1700000000123456").unwrap();
        assert_eq!(ts.to_string(), "2023-11-14 22:13:20.123456");
        let ts: NanoTimestamp = serde_json::from_str("1700000000123456789").unwrap();
        assert_eq!(ts.to_string(), "2023-11-14 22:13:20.123456789");
        let z: ZonedTimestamp = serde_json::from_str("\"2023-11-14T22:13:20.5+02:00\"").unwrap();
        assert_eq!(z.0.offset().local_minus_utc(), 7200);
        assert!(serde_json::from_str::<ZonedTimestamp>("\"yesterday\"").is_err());
    }

    proptest! {
        #[test]
        fn decimal_bytes_and_text_round_trip(unscaled in any::<i128>(), wide in any::<u64>(), scale in 0u32..80) {
            let d = Decimal::new(BigInt::from(unscaled) * BigInt::from(wide), scale).unwrap();
            prop_assert_eq!(&Decimal::from_be_bytes(&d.to_be_bytes(), scale).unwrap(), &d);
            prop_assert_eq!(&d.to_string().parse::<Decimal>().unwrap(), &d);
            let json = serde_json::to_string(&d).unwrap();
            prop_assert_eq!(serde_json::from_str::<Decimal>(&json).unwrap(), d.clone());
            prop_assert_eq!(d.to_f64(), d.to_string().parse::<f64>().unwrap());
        }

        #[test]
        fn times_round_trip(days in -100_000i32..100_000, micros in 0i64..86_400_000_000, ts in -10i64.pow(17)..10i64.pow(17)) {
            let date: Date = serde_json::from_value(days.into()).unwrap();
            prop_assert_eq!(serde_json::to_value(date).unwrap(), serde_json::json!(days));
            let time: MicroTime = serde_json::from_value(micros.into()).unwrap();
            prop_assert_eq!(serde_json::to_value(time).unwrap(), serde_json::json!(micros));
            let stamp: MicroTimestamp = serde_json::from_value(ts.into()).unwrap();
            prop_assert_eq!(serde_json::to_value(stamp).unwrap(), serde_json::json!(ts));
        }
    }
}
