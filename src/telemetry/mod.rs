//! Structured logs through tracing: human text by default, JSON for log shippers.
//! The filter comes from RUST_LOG (default "info").

use tonic::codegen::http::{self, HeaderName};
use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

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
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let layer = fmt::layer().with_writer(writer);
    let _ = match format {
        // Colour only for a person at a terminal, not for a log collector. The text line leaves
        // out the target, which the JSON line keeps for log shippers to filter on.
        LogFormat::Text => registry
            .with(layer.with_target(false).with_ansi(terminal))
            .try_init(),
        LogFormat::Json => registry
            .with(
                layer
                    .with_ansi(false)
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(true),
            )
            .try_init(),
    };
    Ok(guard)
}

/// The call's trace id: the caller's W3C `traceparent` trace id when it sends a valid one, so
/// our lines join the caller's trace; otherwise a new random one.
pub fn trace_id(headers: &http::HeaderMap) -> String {
    // A ready-made header name: looking up by text parses and checks the name on every call.
    const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
    headers
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
pub(crate) fn call_finished(code: tonic::Code, elapsed: std::time::Duration) {
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

/// Tells the caller the call's trace id in `x-trace-id`, on answers and on errors, so a caller
/// can quote it to find the call's lines.
pub(crate) fn tell_trace_id(headers: &mut http::HeaderMap, trace_id: &str) {
    const X_TRACE_ID: HeaderName = HeaderName::from_static("x-trace-id");
    let Ok(mut value) = http::HeaderValue::from_str(trace_id) else {
        return;
    };
    // Sent as never indexed (RFC 7541 §6.2.3): a value no later call repeats would only churn
    // both ends' HPACK tables, an insertion and an eviction per call.
    value.set_sensitive(true);
    headers.insert(X_TRACE_ID, value);
}

#[cfg(test)]
mod tests {
    use super::{tell_trace_id, trace_id, traceparent_trace_id};
    use tonic::codegen::http;

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
    fn the_trace_id_goes_back_never_indexed() {
        const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
        let mut headers = http::HeaderMap::new();
        tell_trace_id(&mut headers, TRACE);
        let value = headers.get("x-trace-id").expect("x-trace-id");
        assert_eq!(value.to_str().ok(), Some(TRACE));
        // h2 writes a sensitive value as a never-indexed literal (RFC 7541 §6.2.3).
        assert!(value.is_sensitive());
    }

    #[test]
    fn the_callers_traceparent_is_read_from_its_headers() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        assert_eq!(trace_id(&headers), "4bf92f3577b34da6a3ce929d0e0e4736");
        let new = trace_id(&http::HeaderMap::new());
        assert_eq!(new.len(), 32);
        assert!(new.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
