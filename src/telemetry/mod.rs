//! Structured logs through tracing: human text by default, JSON for log shippers.
//! The filter comes from RUST_LOG (default "info").

use tonic::codegen::http::HeaderName;
use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

mod lines;
mod output;

/// How log lines are written: text for a person, JSON for a log shipper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Log lines are written to stdout by a background thread in batches (output.rs); lines
/// still waiting are written when the returned guard drops, so the caller keeps it until the
/// process ends. A SIGKILL can lose the last 10 ms or so of lines; decisions are in the
/// decision log, not here.
pub type LogFlushGuard = output::LinesWritten;

/// Installs the global subscriber; a second call installs nothing. Fails only if the writer
/// thread cannot be started.
pub fn init(format: LogFormat) -> std::io::Result<LogFlushGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = output::to(std::io::stdout())?;
    let registry = tracing_subscriber::registry().with(filter);
    // Colour only for a person at a terminal, not for a log collector.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let _ = match format {
        LogFormat::Text if terminal => registry
            .with(fmt::layer().with_writer(writer).with_target(false))
            .try_init(),
        // The same lines as tracing-subscriber's formatters write, at a fraction of the cost
        // (lines.rs).
        LogFormat::Text => registry
            .with(plain(
                writer,
                lines::TextFields,
                lines::TextLine::<lines::Clock>::default(),
            ))
            .try_init(),
        LogFormat::Json => registry
            .with(plain(
                writer,
                lines::JsonFields,
                lines::JsonLine::<lines::Clock>::default(),
            ))
            .try_init(),
    };
    Ok(guard)
}

/// A layer writing uncoloured lines with our own field and line formatters.
fn plain<S, N, E>(writer: output::Lines, fields: N, line: E) -> fmt::Layer<S, N, E, output::Lines>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'w> fmt::FormatFields<'w> + 'static,
    E: fmt::FormatEvent<S, N> + 'static,
{
    fmt::layer()
        .with_writer(writer)
        .with_ansi(false)
        .fmt_fields(fields)
        .event_format(line)
}

/// The call's trace id: the caller's W3C `traceparent` trace id when it sends a valid one, so
/// our lines join the caller's trace; otherwise a new random one.
pub fn trace_id(metadata: &tonic::metadata::MetadataMap) -> String {
    // A ready-made header name: looking up by text parses and checks the name on every call.
    const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
    AsRef::<tonic::codegen::http::HeaderMap>::as_ref(metadata)
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(traceparent_trace_id)
        .map_or_else(new_trace_id, str::to_string)
}

/// 32 lowercase hex digits, written straight into a buffer rather than through the formatter.
fn new_trace_id() -> String {
    let mut buffer = uuid::Uuid::encode_buffer();
    uuid::Uuid::now_v7()
        .simple()
        .encode_lower(&mut buffer)
        .to_owned()
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>` (W3C Trace Context); an all-zero
/// trace id is invalid.
fn traceparent_trace_id(value: &str) -> Option<&str> {
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0'))
    .then_some(trace)
}

/// The one line every call logs when it finishes (inside its span, so it carries the method,
/// trace id, caller and decision id). No patient data is in it.
pub fn call_finished(code: tonic::Code, elapsed: std::time::Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    match code {
        tonic::Code::Ok => tracing::info!(code = ?code, micros, "call finished"),
        // The caller went away before its answer: neither a refusal nor the server failing.
        tonic::Code::Cancelled => tracing::info!(code = ?code, micros, "call cancelled"),
        tonic::Code::Internal | tonic::Code::Unavailable | tonic::Code::Unknown => {
            tracing::error!(code = ?code, micros, "call failed")
        }
        _ => tracing::warn!(code = ?code, micros, "call refused"),
    }
}

/// Returns the trace id to the caller as `x-trace-id`, on answers and on errors.
pub fn with_trace_id<T>(
    result: Result<tonic::Response<T>, tonic::Status>,
    trace_id: &str,
) -> Result<tonic::Response<T>, tonic::Status> {
    let Ok(mut value) = tonic::metadata::MetadataValue::try_from(trace_id) else {
        return result;
    };
    // Sent as never indexed (RFC 7541 §6.2.3): a value no later call repeats would only churn
    // both ends' HPACK tables, an insertion and an eviction per call.
    value.set_sensitive(true);
    match result {
        Ok(mut response) => {
            response.metadata_mut().insert("x-trace-id", value);
            Ok(response)
        }
        Err(mut status) => {
            status.metadata_mut().insert("x-trace-id", value);
            Err(status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{trace_id, traceparent_trace_id, with_trace_id};

    #[test]
    fn a_valid_traceparent_gives_its_trace_id_and_others_are_ignored() {
        assert_eq!(
            traceparent_trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            traceparent_trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(traceparent_trace_id("not a traceparent"), None);
        assert_eq!(
            traceparent_trace_id("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            None
        );
    }

    #[test]
    fn the_trace_id_goes_back_never_indexed_on_answers_and_errors() {
        const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
        let answered = with_trace_id(Ok(tonic::Response::new(())), TRACE).expect("answer");
        let refused =
            with_trace_id::<()>(Err(tonic::Status::not_found("no")), TRACE).expect_err("error");
        for metadata in [answered.metadata(), refused.metadata()] {
            let value = metadata.get("x-trace-id").expect("x-trace-id");
            assert_eq!(value.to_str().ok(), Some(TRACE));
            // h2 writes a sensitive value as a never-indexed literal (RFC 7541 §6.2.3).
            assert!(value.is_sensitive());
        }
    }

    #[test]
    fn the_callers_traceparent_is_read_from_its_metadata() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .expect("header"),
        );
        assert_eq!(trace_id(&metadata), "4bf92f3577b34da6a3ce929d0e0e4736");
        let new = trace_id(&tonic::metadata::MetadataMap::new());
        assert_eq!(new.len(), 32);
        assert!(new.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
