//! Errors of the lower crates as gRPC statuses: one exhaustive mapping per error type,
//! with messages that say what to do (and which `[server]` setting a limit is).

use datafusion::error::DataFusionError;
use tessera_engine::EngineError;
use tonic::Status;

/// Bytes as people read them (`512 MiB`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The status of an engine error met while planning or running a caller's query.
pub fn engine(e: &EngineError) -> Status {
    match e {
        EngineError::Lake(_) | EngineError::Register { .. } => {
            Status::unavailable(format!("cannot read the lake: {e}"))
        }
        EngineError::Cluster { .. } => Status::unavailable(e.to_string()),
        EngineError::Sql(message) => Status::invalid_argument(message.clone()),
        EngineError::Refused { .. } => Status::permission_denied(e.to_string()),
        EngineError::Statements { .. } => Status::invalid_argument(e.to_string()),
        EngineError::Memory { limit, message } => Status::resource_exhausted(format!(
            "the query needs more memory than [server] query_memory = {} allows (shared by the running queries), even after spilling sorts and aggregations to disk: narrow it or ask for a larger limit ({message})",
            bytes(*limit)
        )),
        EngineError::Timeout { limit } => Status::deadline_exceeded(format!(
            "the query ran longer than [server] query_timeout = {} and was cancelled",
            humantime(*limit)
        )),
        EngineError::Busy { running, waited } => Status::resource_exhausted(format!(
            "{running} queries are running, the most [server] max_concurrent_queries allows; waited {} for one to finish: try again later",
            humantime(*waited)
        )),
        EngineError::Column { .. } => Status::internal(e.to_string()),
        EngineError::RowFilter { .. } => {
            Status::failed_precondition(format!("the caller's row filter cannot be applied: {e}"))
        }
        EngineError::DataFusion(inner) => datafusion(inner),
    }
}

/// The status of an identity error (stitching, look-ups).
pub fn identity(e: &tessera_identity::IdentityError) -> Status {
    use tessera_identity::IdentityError as I;
    match e {
        I::NoEvents => Status::failed_precondition(e.to_string()),
        I::BadIdentifier(m) => Status::invalid_argument(m.clone()),
        I::ReadFile { .. } | I::BadFile { .. } | I::UnknownType { .. } | I::Query { .. } => {
            Status::failed_precondition(e.to_string())
        }
        I::Lake(_) => Status::unavailable(e.to_string()),
        I::Engine(inner) => engine(inner),
        I::DataFusion(inner) => datafusion(inner),
        I::Arrow(_) => Status::internal(e.to_string()),
    }
}

/// The status of a privacy error (erasure, export, requests).
pub fn privacy(e: &tessera_privacy::PrivacyError) -> Status {
    use tessera_privacy::PrivacyError as P;
    match e {
        P::BadSubject(m) => Status::invalid_argument(m.clone()),
        P::Refused(m) => Status::failed_precondition(m.clone()),
        P::Lake(_) | P::Io { .. } => Status::unavailable(e.to_string()),
        P::Engine(inner) => engine(inner),
        P::Identity(inner) => identity(inner),
        P::DataFusion { source, .. } => datafusion(source),
    }
}

/// The status of a segments error (refreshes, audience reads).
pub fn segments(e: &tessera_segments::SegmentsError) -> Status {
    use tessera_segments::SegmentsError as S;
    match e {
        S::ReadFile { .. } | S::Invalid(_) | S::Query { .. } => {
            Status::failed_precondition(e.to_string())
        }
        S::UnknownSegment { .. } => Status::not_found(e.to_string()),
        S::Lake(_) => Status::unavailable(e.to_string()),
        S::Engine(inner) => engine(inner),
        S::DataFusion(inner) => datafusion(inner),
        S::Arrow(_) => Status::internal(e.to_string()),
    }
}

/// The status of an activation error (planning syncs, reading the ledger).
pub fn activate(e: &tessera_activate::ActivateError) -> Status {
    use tessera_activate::ActivateError as A;
    match e {
        A::UnknownSync { .. } => Status::not_found(e.to_string()),
        A::NotRefreshed { .. }
        | A::MissingSecret { .. }
        | A::BadSecret { .. }
        | A::BadDestination { .. }
        | A::BadHeader { .. }
        | A::Fields { .. } => Status::failed_precondition(e.to_string()),
        A::Lake(_) => Status::unavailable(e.to_string()),
        A::Engine(inner) => engine(inner),
        A::Segments(inner) => segments(inner),
        A::DataFusion(inner) => datafusion(inner),
        A::Client(_) | A::Members { .. } | A::Arrow(_) => Status::internal(e.to_string()),
    }
}

/// The status of a DataFusion error outside the cases the engine classifies.
fn datafusion(e: &DataFusionError) -> Status {
    match e.find_root() {
        DataFusionError::ResourcesExhausted(m) => Status::resource_exhausted(m.clone()),
        DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) => {
            Status::unavailable(format!("cannot read the lake: {}", e.message()))
        }
        DataFusionError::Execution(_)
        | DataFusionError::ArrowError(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SQL(..)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_) => Status::invalid_argument(e.message().into_owned()),
        DataFusionError::ParquetError(_)
        | DataFusionError::ExecutionJoin(_)
        | DataFusionError::Internal(_)
        | DataFusionError::External(_)
        | DataFusionError::Context(..)
        | DataFusionError::Substrait(_)
        | DataFusionError::Diagnostic(..)
        | DataFusionError::Collection(_)
        | DataFusionError::Shared(_)
        | DataFusionError::Ffi(_) => Status::internal(e.message().into_owned()),
    }
}

/// A duration as people read it (`300 ms`, `30 s`, `15 min`).
pub fn humantime(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms.is_multiple_of(60_000) {
        format!("{} min", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_name_their_setting() {
        let s = engine(&EngineError::Memory {
            limit: 512 << 20,
            message: "Failed to allocate".into(),
        });
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(
            s.message().contains("query_memory = 512 MiB"),
            "{}",
            s.message()
        );
        let s = engine(&EngineError::Timeout {
            limit: std::time::Duration::from_secs(90),
        });
        assert_eq!(s.code(), tonic::Code::DeadlineExceeded);
        assert!(
            s.message().contains("query_timeout = 90 s"),
            "{}",
            s.message()
        );
        let s = engine(&EngineError::Busy {
            running: 4,
            waited: std::time::Duration::from_secs(30),
        });
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        let s = engine(&EngineError::Refused {
            statement: "COPY TO".into(),
        });
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert!(s.message().starts_with("COPY TO is not allowed"));
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(12), "12 bytes");
        assert_eq!(humantime(std::time::Duration::from_millis(300)), "300 ms");
        assert_eq!(humantime(std::time::Duration::from_secs(900)), "15 min");
    }
}
