//! The rows the pipeline reads and the objects it writes.
//!
//! Rows are the `after` images of Debezium's MySQL change events: columns
//! the pipeline does not use are ignored, so the source tables can grow.
//! The output objects are the contract of the output topics; their Avro
//! schemas are in `schemas/`.

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// A row of the `users` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRow {
    pub user_id: i64,
    pub email: String,
}

/// A row of the `preferences` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferencesRow {
    pub user_id: i64,
    /// A MySQL `TINYINT(1)`, which Debezium writes as `0`/`1` (or as a
    /// boolean for `BIT(1)` and `tinyInt1isBit`): both are read.
    #[serde(deserialize_with = "bool_or_int")]
    pub dark_mode: bool,
}

/// The value of the `user-profile` topic: a user joined with their
/// preferences. `dark_mode` is `null` while the user has no preferences
/// row: the user exists and is published; a preferences row without a
/// user publishes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    pub user_id: i64,
    pub email: String,
    pub dark_mode: Option<bool>,
}

impl UserProfile {
    pub fn new(user: &UserRow, preferences: Option<&PreferencesRow>) -> Self {
        UserProfile {
            user_id: user.user_id,
            email: user.email.clone(),
            dark_mode: preferences.map(|p| p.dark_mode),
        }
    }
}

/// The answer of the ID-mapping service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    pub user_id: i64,
    pub new_user_id: String,
}

/// The value of the `user-god-object` topic: the profile with the user's
/// id in the new system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GodObject {
    pub user_id: i64,
    pub new_user_id: String,
    pub email: String,
    pub dark_mode: Option<bool>,
}

impl GodObject {
    pub fn new(profile: UserProfile, mapping: IdMapping) -> Self {
        GodObject {
            user_id: profile.user_id,
            new_user_id: mapping.new_user_id,
            email: profile.email,
            dark_mode: profile.dark_mode,
        }
    }
}

/// Reads the flag as it comes, without buffering it as an untagged enum
/// would (which tries each reading and builds an error for the first).
fn bool_or_int<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    struct Flag;
    impl Visitor<'_> for Flag {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a boolean, 0 or 1")
        }
        fn visit_bool<E: de::Error>(self, flag: bool) -> Result<bool, E> {
            Ok(flag)
        }
        fn visit_i64<E: de::Error>(self, number: i64) -> Result<bool, E> {
            match number {
                0 => Ok(false),
                1 => Ok(true),
                other => Err(E::custom(format!("dark_mode must be 0 or 1, not {other}"))),
            }
        }
        fn visit_u64<E: de::Error>(self, number: u64) -> Result<bool, E> {
            match i64::try_from(number) {
                Ok(number) => self.visit_i64(number),
                Err(_) => Err(E::custom(format!("dark_mode must be 0 or 1, not {number}"))),
            }
        }
    }
    deserializer.deserialize_any(Flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dark_mode_reads_booleans_and_tinyints_and_refuses_other_numbers() {
        let read = |json: &str| serde_json::from_str::<PreferencesRow>(json);
        assert!(
            read(r#"{"user_id":1,"dark_mode":1,"language":"en"}"#)
                .unwrap()
                .dark_mode
        );
        assert!(!read(r#"{"user_id":1,"dark_mode":false}"#).unwrap().dark_mode);
        for (json, expected) in [
            (r#"{"user_id":1,"dark_mode":2}"#, "dark_mode must be 0 or 1, not 2"),
            (r#"{"user_id":1,"dark_mode":-1}"#, "dark_mode must be 0 or 1, not -1"),
            (
                r#"{"user_id":1,"dark_mode":18446744073709551615}"#,
                "not 18446744073709551615",
            ),
            (r#"{"user_id":1,"dark_mode":"1"}"#, "expected a boolean, 0 or 1"),
            (r#"{"user_id":1,"dark_mode":null}"#, "expected a boolean, 0 or 1"),
        ] {
            let error = read(json).unwrap_err().to_string();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }
}
