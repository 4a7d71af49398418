//! tokio-postgres driver specific behaviour (filled in below).
