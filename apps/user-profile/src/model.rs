//! The rows the pipeline reads and the objects it writes.
//!
//! Rows are the `after` images of Debezium's MySQL change events: columns
//! the pipeline does not use are ignored, so the source tables can grow.
//! The output objects are the contract of the output topics; their Avro
//! schemas are in `schemas/`.

use serde::{Deserialize, Deserializer, Serialize};

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

fn bool_or_int<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Int(i64),
    }
    match Flag::deserialize(deserializer)? {
        Flag::Bool(flag) => Ok(flag),
        Flag::Int(0) => Ok(false),
        Flag::Int(1) => Ok(true),
        Flag::Int(other) => Err(serde::de::Error::custom(format!(
            "dark_mode must be 0 or 1, not {other}"
        ))),
    }
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
        let error = read(r#"{"user_id":1,"dark_mode":2}"#).unwrap_err().to_string();
        assert!(error.contains("dark_mode must be 0 or 1"), "{error}");
    }
}
