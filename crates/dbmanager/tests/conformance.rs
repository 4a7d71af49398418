//! One SQL conformance suite, run against every SQL backend: the scenarios live in
//! `support/conformance.rs`, written once against the backend-neutral API; each backend takes
//! part with one `conformance!` line below naming its fixture (and `sea_orm` when the backend
//! has SeaORM, so the statement scenarios run again with `default_orm: sea-orm`).
//!
//! Test names read `<backend>::<scenario>` for the pool scenarios and
//! `<backend>::<layer>::<scenario>` for the statement scenarios, e.g.
//! `mysql::sea_orm::placeholder_edge_cases`.

mod support;

use dbmanager::DefaultOrm;
use support::conformance as suite;

/// Scenarios on the manager and the pool: run once per backend, on the native layer.
macro_rules! pool_scenarios {
    ($fixture:ty) => {
        pool_scenarios!(@each $fixture;
            lookup_by_name_and_default_switching,
            misuse_is_a_typed_error,
            stats_after_use_and_under_contention,
            close_with_a_checked_out_connection,
            native_driver_errors_classify,
        );
    };
    (@each $fixture:ty; $($scenario:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $scenario() {
                suite::$scenario::<$fixture>().await;
            }
        )+
    };
}

/// Scenarios on statements: run on every layer the backend offers.
macro_rules! statement_scenarios {
    ($fixture:ty, $layer:expr) => {
        statement_scenarios!(@each $fixture, $layer;
            transactions,
            commit_after_an_error_tells_the_truth,
            null_in_every_column_type,
            unicode_text_round_trips,
            large_blob_round_trips,
            ten_thousand_rows_in_order,
            parameters_up_to_the_limit,
            parameters_over_the_limit_are_a_query_error,
            placeholder_edge_cases,
            missing_parameter_is_a_query_error,
            placeholder_zero_is_a_query_error,
            query_errors_are_query_kind,
            typed_values_round_trip,
            parameter_types_change_between_calls,
        );
    };
    (@each $fixture:ty, $layer:expr; $($scenario:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $scenario() {
                suite::$scenario::<$fixture>($layer).await;
            }
        )+
    };
}

/// The whole suite for one backend: `conformance!(module, Fixture)`, plus `sea_orm` for the
/// backends with SeaORM.
macro_rules! conformance {
    ($backend:ident, $fixture:ty $(, $orm:ident)?) => {
        mod $backend {
            use super::*;

            pool_scenarios!($fixture);

            mod native {
                use super::*;
                statement_scenarios!($fixture, DefaultOrm::Native);
            }

            $(
                #[cfg(feature = "sea-orm")]
                mod $orm {
                    use super::*;
                    statement_scenarios!($fixture, DefaultOrm::SeaOrm);
                }
            )?
        }
    };
}

#[cfg(feature = "postgres")]
conformance!(postgres, suite::Postgres, sea_orm);
#[cfg(feature = "tokio-postgres")]
conformance!(tokio_postgres, suite::TokioPostgres);
#[cfg(feature = "sqlite")]
conformance!(sqlite, suite::SqliteFile, sea_orm);
#[cfg(feature = "sqlite")]
conformance!(sqlite_memory, suite::SqliteMemory, sea_orm);
#[cfg(feature = "mysql")]
conformance!(mysql, suite::Mysql, sea_orm);
#[cfg(feature = "mssql")]
conformance!(mssql, suite::Mssql);
