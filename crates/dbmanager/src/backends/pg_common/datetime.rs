//! PostgreSQL's binary dates and times (days or microseconds from 2000-01-01), read and written
//! the same way by both drivers, with checked arithmetic: sqlx's own decoders panic on
//! `infinity` and on a date beyond chrono's range (years -262143 to 262142; PostgreSQL goes to
//! 294276), and both drivers read `time '24:00:00'` as midnight.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Timelike as _};

const CAST: &str = "cast it in SQL (e.g. `::text`)";

fn epoch() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or_default()
}

/// A `date` from its days since 2000-01-01.
pub(crate) fn date(days: i32) -> Result<NaiveDate, String> {
    match days {
        i32::MAX => Err(format!("date `infinity` has no calendar value; {CAST}")),
        i32::MIN => Err(format!("date `-infinity` has no calendar value; {CAST}")),
        _ => epoch()
            .date()
            .checked_add_signed(chrono::TimeDelta::days(days.into()))
            .ok_or_else(|| format!("date beyond chrono's range (years -262143 to 262142); {CAST}")),
    }
}

/// A `timestamp` (or the UTC time of a `timestamptz`) from its microseconds since 2000-01-01.
pub(crate) fn timestamp(micros: i64) -> Result<NaiveDateTime, String> {
    match micros {
        i64::MAX => Err(format!(
            "timestamp `infinity` has no calendar value; {CAST}"
        )),
        i64::MIN => Err(format!(
            "timestamp `-infinity` has no calendar value; {CAST}"
        )),
        _ => epoch()
            .checked_add_signed(chrono::TimeDelta::microseconds(micros))
            .ok_or_else(|| {
                format!("timestamp beyond chrono's range (years -262143 to 262142); {CAST}")
            }),
    }
}

/// A `time` from its microseconds since midnight; `24:00:00`, which PostgreSQL allows, is no
/// time of day to chrono.
pub(crate) fn time(micros: i64) -> Result<NaiveTime, String> {
    let secs = u32::try_from(micros.div_euclid(1_000_000)).ok();
    let nanos = u32::try_from(micros.rem_euclid(1_000_000) * 1000).ok();
    secs.zip(nanos)
        .and_then(|(s, n)| NaiveTime::from_num_seconds_from_midnight_opt(s, n))
        .ok_or_else(|| {
            if micros == 86_400_000_000 {
                format!("time 24:00:00 has no chrono value (a time of day ends before it); {CAST}")
            } else {
                format!("time of {micros} microseconds is out of range")
            }
        })
}

/// A `timetz` (microseconds since midnight, then the zone's offset in seconds west of UTC) as
/// the text both drivers give it, `HH:MM:SS[.f]±HH:MM`: no variant carries a time of day with
/// an offset, and text keeps both exactly, `24:00:00` included (sqlx's decoder read it as
/// `00:00:00`).
pub(crate) fn timetz(raw: &[u8]) -> Result<String, String> {
    let bytes: [u8; 12] = raw
        .try_into()
        .map_err(|_| "timetz of a wrong size".to_owned())?;
    let mut micros = [0u8; 8];
    micros.copy_from_slice(&bytes[..8]);
    let micros = i64::from_be_bytes(micros);
    let west = i32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let offset = chrono::FixedOffset::west_opt(west)
        .ok_or_else(|| "timetz offset out of range".to_owned())?;
    let clock = if micros == 86_400_000_000 {
        "24:00:00".to_owned()
    } else {
        time(micros)?.format("%H:%M:%S%.f").to_string()
    };
    Ok(format!("{clock}{offset}"))
}

/// A timestamp with the digits below a microsecond dropped, as PostgreSQL stores it. Both
/// drivers count microseconds from 2000-01-01 toward zero, which moved an earlier time forward
/// (`1999-12-31 23:59:59.9999995` was sent as `2000-01-01 00:00:00`); this always drops them.
pub(crate) fn whole_micros(t: NaiveDateTime) -> NaiveDateTime {
    t.with_nanosecond(t.nanosecond() / 1000 * 1000).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_are_errors_not_panics_or_other_values() {
        assert!(date(i32::MAX).unwrap_err().contains("`infinity`"));
        assert!(date(i32::MIN).unwrap_err().contains("`-infinity`"));
        // 294276-12-31, PostgreSQL's last date.
        assert!(date(106_751_616).unwrap_err().contains("chrono's range"));
        assert_eq!(date(-1), Ok(NaiveDate::from_ymd_opt(1999, 12, 31).unwrap()));
        assert!(timestamp(i64::MAX).unwrap_err().contains("`infinity`"));
        assert!(timestamp(i64::MIN).unwrap_err().contains("`-infinity`"));
        assert!(
            timestamp(i64::MAX - 1)
                .unwrap_err()
                .contains("chrono's range")
        );
        assert!(time(86_400_000_000).unwrap_err().contains("24:00:00"));
        assert!(time(-1).is_err());
        let timetz = |micros: i64, west: i32| {
            let mut raw = micros.to_be_bytes().to_vec();
            raw.extend(west.to_be_bytes());
            super::timetz(&raw)
        };
        assert_eq!(
            timetz(36_000_500_000, -19_800).as_deref(),
            Ok("10:00:00.500+05:30")
        );
        assert_eq!(
            timetz(86_400_000_000, 28_800).as_deref(),
            Ok("24:00:00-08:00")
        );
        assert_eq!(
            time(86_399_999_999),
            Ok(NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999).unwrap())
        );
        let before = NaiveDate::from_ymd_opt(1999, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 999_999_500)
            .unwrap();
        assert_eq!(
            whole_micros(before),
            NaiveDate::from_ymd_opt(1999, 12, 31)
                .unwrap()
                .and_hms_micro_opt(23, 59, 59, 999_999)
                .unwrap()
        );
    }
}
