//! A standby's replay lag, as the standby itself sees it.

use std::time::Duration;

use crate::driver::LagProbe;
use crate::sql::Row;

/// `now() - pg_last_xact_replay_timestamp()` is the age of the last transaction replayed: on a
/// standby of an idle primary it grows without any lag, so a standby that has replayed all it
/// received counts as 0 while its WAL receiver runs (`pg_stat_wal_receiver` has a row; its `pid`
/// is shown to every user). Without one (the primary unreachable from the standby, replication
/// broken, archive recovery only) having replayed all it received says nothing of what the
/// primary has since written: the age of the last transaction replayed stands, so such a standby
/// goes over `max_replica_lag` instead of looking current for ever. A server that is not in
/// recovery (a promoted standby, or a primary listed as a replica) is not behind anything: 0 as
/// well. A standby with WAL to replay that has replayed no transaction since it started has no
/// timestamp to measure from: NULL, lag unknown.
const LAG_SQL: &str = "SELECT CASE \
    WHEN NOT pg_is_in_recovery() THEN 0::float8 \
    WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() \
        AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver) THEN 0::float8 \
    ELSE EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp()))::float8 \
    END AS lag_seconds";

pub(crate) static PROBE: LagProbe = LagProbe {
    statements: &[LAG_SQL],
    read,
};

fn read(row: Option<&Row>) -> Result<Duration, &'static str> {
    let seconds = row
        .and_then(|r| r.get::<Option<f64>>(0))
        .flatten()
        .ok_or("WAL to replay but no transaction replayed yet to measure the lag from")?;
    // A clock a little behind the primary's gives a negative age.
    Ok(Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::MAX))
}
