//! Calendar dates: TOML dates for the policy file and case patients, whole-year ages.

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Deserializer, de::Error};

/// Reads a TOML local date (`2025-07-29`) into a [`NaiveDate`].
pub fn required<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
    let value = toml::value::Datetime::deserialize(d)?;
    match (value.date, value.time, value.offset) {
        (Some(date), None, None) => NaiveDate::from_ymd_opt(
            i32::from(date.year),
            u32::from(date.month),
            u32::from(date.day),
        )
        .ok_or_else(|| D::Error::custom(format!("{value} is not a calendar date"))),
        _ => Err(D::Error::custom(format!(
            "expected a date such as 2025-07-29, found {value}"
        ))),
    }
}

/// Like [`required`], for an optional field.
pub(crate) fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDate>, D::Error> {
    required(d).map(Some)
}

/// Completed years from `from` to `to` (negative if `to` is earlier).
pub(crate) fn whole_years_between(from: NaiveDate, to: NaiveDate) -> i32 {
    let mut years = to.year() - from.year();
    if (to.month(), to.day()) < (from.month(), from.day()) {
        years -= 1;
    }
    years
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("valid test date")
    }

    #[test]
    fn age_turns_over_on_the_birthday() {
        assert_eq!(whole_years_between(d(2008, 6, 2), d(2026, 6, 1)), 17);
        assert_eq!(whole_years_between(d(2008, 6, 2), d(2026, 6, 2)), 18);
        assert_eq!(whole_years_between(d(2000, 2, 29), d(2001, 2, 28)), 0);
    }
}
