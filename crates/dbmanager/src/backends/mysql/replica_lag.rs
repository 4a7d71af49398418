//! A replica's lag, as `SHOW REPLICA STATUS` (or `SHOW SLAVE STATUS`) reports it.

use std::time::Duration;

use crate::driver::LagProbe;
use crate::sql::Row;

pub(crate) static PROBE: LagProbe = LagProbe {
    // MySQL 8.0.22+ and MariaDB 10.5.1+ know the first; older servers only the second.
    statements: &["SHOW REPLICA STATUS", "SHOW SLAVE STATUS"],
    read,
};

/// No row: the server replicates from nothing, so it is behind nothing. A row whose
/// `Seconds_Behind_Source` (MySQL 8) or `Seconds_Behind_Master` (MariaDB, older MySQL) is NULL:
/// its replication threads are stopped or cannot reach the primary, so its lag is unknown.
fn read(row: Option<&Row>) -> Result<Duration, &'static str> {
    let Some(row) = row else {
        return Ok(Duration::ZERO);
    };
    let column = ["Seconds_Behind_Source", "Seconds_Behind_Master"]
        .into_iter()
        .find(|c| row.value(*c).is_some());
    let Some(column) = column else {
        return Err("the replica status has no Seconds_Behind_Source/Master column");
    };
    let seconds = row
        .get::<Option<i64>>(column)
        .flatten()
        .or_else(|| {
            row.get::<Option<String>>(column)
                .flatten()
                .and_then(|t| t.trim().parse().ok())
        })
        .ok_or("replication is not running (Seconds_Behind_Source/Master is NULL)")?;
    Ok(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
}
