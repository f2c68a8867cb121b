//! Log lines written by hand, the same lines tracing-subscriber writes: its default text line
//! without colour, and its JSON line with the event's fields flattened, the current span and
//! the span list. The tests below compare the two, field kind by field kind.
//!
//! tracing-subscriber builds every piece of a line through `core::fmt`, and its JSON formatter
//! parses each span's fields back from JSON text for `span` and again for `spans`. The `call
//! finished` line and its span cost a unary call about 18k instructions as text and 65k as JSON
//! (the format the Kubernetes manifests use), against 110k for the rest of the call
//! (docs/performance.md).

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

/// UTC wall-clock time as tracing-subscriber's `SystemTime` writes it, RFC 3339 to the
/// microsecond (`2026-11-29T14:52:00.123456Z`); each thread works out the date and time of
/// day once per second.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock;

thread_local! {
    /// The second this thread last wrote, and its text up to the fraction:
    /// `2026-11-29T14:52:00.`.
    static SECOND: RefCell<(Option<u64>, String)> = const { RefCell::new((None, String::new())) };
}

impl FormatTime for Clock {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) else {
            // A clock set before 1970: tracing-subscriber writes that too.
            return tracing_subscriber::fmt::time::SystemTime.format_time(w);
        };
        let seconds = now.as_secs();
        SECOND.with_borrow_mut(|(second, text)| {
            if *second != Some(seconds) {
                let time = i64::try_from(seconds)
                    .ok()
                    .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                    .ok_or(fmt::Error)?;
                text.clear();
                write!(text, "{}", time.format("%Y-%m-%dT%H:%M:%S."))?;
                *second = Some(seconds);
            }
            w.write_str(text)
        })?;
        let mut micros = now.subsec_micros();
        let mut digits = *b"000000Z";
        for digit in digits[..6].iter_mut().rev() {
            *digit = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        w.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
    }
}

/// tracing-subscriber's default text line without colour or target:
/// `<time> <LEVEL> <span>{<fields>}:<span>{<fields>}: <message> <fields>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextLine<T = Clock> {
    timer: T,
}

impl<S, N, T> FormatEvent<S, N> for TextLine<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.timer.format_time(&mut w).is_err() {
            w.write_str("<unknown time>")?;
        }
        w.write_char(' ')?;
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        // Padded to five characters, as tracing-subscriber pads them.
        w.write_str(match *metadata.level() {
            Level::TRACE => "TRACE ",
            Level::DEBUG => "DEBUG ",
            Level::INFO => " INFO ",
            Level::WARN => " WARN ",
            Level::ERROR => "ERROR ",
        })?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                w.write_str(span.metadata().name())?;
                seen = true;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    w.write_char('{')?;
                    w.write_str(fields)?;
                    w.write_char('}')?;
                }
                w.write_char(':')?;
            }
            if seen {
                w.write_char(' ')?;
            }
        }
        ctx.format_fields(w.by_ref(), event)?;
        w.write_char('\n')
    }
}

/// Fields as tracing-subscriber's `DefaultFields` writes them without colour: `name=value`,
/// separated by spaces; the message bare, with terminal escapes escaped; strings quoted.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = TextVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'w> {
    writer: Writer<'w>,
    is_empty: bool,
    result: fmt::Result,
}

impl TextVisitor<'_> {
    /// Writes the separator and `name=` (nothing for the message); false when the field is
    /// not written (log records' metadata, already in the line) or writing has failed.
    fn start(&mut self, field: &Field) -> bool {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return false;
        }
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.result = self.writer.write_char(' ');
        }
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.result = self
                .result
                .and_then(|()| self.writer.write_str(name))
                .and_then(|()| self.writer.write_char('='));
        }
        self.result.is_ok()
    }
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.start(field) {
            return;
        }
        self.result = if field.name() == "message" {
            Sanitised(&mut self.writer).write_str(value)
        } else if value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
        {
            // Debug would write these characters as they are.
            self.writer
                .write_char('"')
                .and_then(|()| self.writer.write_str(value))
                .and_then(|()| self.writer.write_char('"'))
        } else {
            write!(self.writer, "{value:?}")
        };
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field) {
            self.result = self.writer.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.start(field) {
            self.result = self.writer.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field) {
            self.result = self.writer.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // An error and its sources: rare, so tracing-subscriber's own visitor writes it.
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        visitor.record_error(field, value);
        self.result = visitor.finish();
        self.is_empty = false;
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.start(field) {
            return;
        }
        self.result = if field.name() == "message" {
            write!(Sanitised(&mut self.writer), "{value:?}")
        } else {
            write!(self.writer, "{value:?}")
        };
    }
}

/// Writes a message with the characters that could drive a terminal (ESC, BEL, BS, FF, DEL
/// and the C1 controls) escaped, as tracing-subscriber does: a log line cannot recolour or
/// rewrite the terminal showing it.
struct Sanitised<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Sanitised<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut clean_from = 0;
        for (at, c) in s.char_indices() {
            let escape = match c {
                '\x1b' => "\\x1b",
                '\x07' => "\\x07",
                '\x08' => "\\x08",
                '\x0c' => "\\x0c",
                '\x7f' => "\\x7f",
                '\u{80}'..='\u{9f}' => "",
                _ => continue,
            };
            self.0
                .write_str(s.get(clean_from..at).unwrap_or_default())?;
            if escape.is_empty() {
                write!(self.0, "\\u{{{:x}}}", u32::from(c))?;
            } else {
                self.0.write_str(escape)?;
            }
            clean_from = at + c.len_utf8();
        }
        self.0.write_str(s.get(clean_from..).unwrap_or_default())
    }
}

/// tracing-subscriber's JSON line with `flatten_event(true)`, the current span and the span
/// list: `{"timestamp":…,"level":…,<fields>,"target":…,"span":{…},"spans":[…]}`. The keys of
/// a span's fields are in the order they were recorded, where tracing-subscriber sorts them;
/// JSON objects are unordered, and every reader sees the same object.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLine<T = Clock> {
    timer: T,
}

impl<S, T> FormatEvent<S, JsonFields> for JsonLine<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        w.write_str("{\"timestamp\":\"")?;
        self.timer.format_time(&mut JsonEscaped(&mut w).writer())?;
        w.write_str("\",\"level\":\"")?;
        w.write_str(metadata.level().as_str())?;
        w.write_char('"')?;
        let mut fields = JsonVisitor {
            writer: w.by_ref(),
            first: false,
            span: false,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_str(",\"target\":")?;
        json_string(&mut w, metadata.target())?;
        let current = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = &current {
            w.write_str(",\"span\":")?;
            json_span(&mut w, span)?;
            w.write_str(",\"spans\":[")?;
            if let Some(leaf) = ctx.lookup_current() {
                for (i, span) in leaf.scope().from_root().enumerate() {
                    if i > 0 {
                        w.write_char(',')?;
                    }
                    json_span(&mut w, &span)?;
                }
            }
            w.write_char(']')?;
        }
        w.write_str("}\n")
    }
}

/// A span as a JSON object: its fields, then its name.
fn json_span<S: for<'a> LookupSpan<'a>>(w: &mut Writer<'_>, span: &SpanRef<'_, S>) -> fmt::Result {
    w.write_char('{')?;
    let extensions = span.extensions();
    if let Some(fields) = extensions.get::<FormattedFields<JsonFields>>()
        && !fields.is_empty()
    {
        w.write_str(fields)?;
        w.write_char(',')?;
    }
    w.write_str("\"name\":")?;
    json_string(w, span.metadata().name())?;
    w.write_char('}')
}

/// A span's fields as the members of a JSON object, without its braces (so fields recorded
/// later are appended): `"method":"EvaluateEligibility","trace_id":"…"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonFields;

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = JsonVisitor {
            writer,
            first: true,
            span: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let first = current.is_empty();
        let mut visitor = JsonVisitor {
            writer: current.as_writer(),
            first,
            span: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes `"name":value` members. A span's fields leave out log records' metadata and take
/// `r#` off raw identifiers where they are formatted with Debug; an event's fields are written
/// as they are. Both as tracing-subscriber does.
struct JsonVisitor<'w> {
    writer: Writer<'w>,
    first: bool,
    span: bool,
    result: fmt::Result,
}

impl JsonVisitor<'_> {
    fn key(&mut self, name: &str) -> bool {
        if self.result.is_err() {
            return false;
        }
        if !self.first {
            self.result = self.writer.write_char(',');
        }
        self.first = false;
        self.result = self
            .result
            .and_then(|()| json_string(&mut self.writer, name))
            .and_then(|()| self.writer.write_char(':'));
        self.result.is_ok()
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.key(field.name()) {
            self.result = json_string(&mut self.writer, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field.name()) {
            self.result = self.writer.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field.name()) {
            self.result = self.writer.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field.name()) {
            self.result = self.writer.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field.name()) {
            // serde_json's number, or null for NaN and the infinities.
            self.result = serde_json::to_string(&value)
                .map_err(|_| fmt::Error)
                .and_then(|number| self.writer.write_str(&number));
        }
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        if !self.span {
            // An event's bytes are their Debug text, as tracing-subscriber writes them.
            return self.record_debug(field, &tracing::field::debug(value));
        }
        if self.key(field.name()) {
            self.result = serde_json::to_string(value)
                .map_err(|_| fmt::Error)
                .and_then(|array| self.writer.write_str(&array));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut name = field.name();
        if self.span {
            if name.starts_with("log.") {
                return;
            }
            name = name.strip_prefix("r#").unwrap_or(name);
        }
        if self.key(name) {
            self.result = self
                .writer
                .write_char('"')
                .and_then(|()| write!(JsonEscaped(&mut self.writer), "{value:?}"))
                .and_then(|()| self.writer.write_char('"'));
        }
    }
}

/// `value` as a JSON string.
fn json_string(w: &mut Writer<'_>, value: &str) -> fmt::Result {
    w.write_char('"')?;
    JsonEscaped(w).write_str(value)?;
    w.write_char('"')
}

/// Writes the inside of a JSON string, escaped as serde_json escapes it.
struct JsonEscaped<'a, 'w>(&'a mut Writer<'w>);

impl<'w> JsonEscaped<'_, 'w> {
    /// A writer through this escaper, for a timer.
    fn writer(&mut self) -> Writer<'_> {
        Writer::new(self)
    }
}

impl fmt::Write for JsonEscaped<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut clean_from = 0;
        for (at, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0x00..=0x1f => "",
                _ => continue,
            };
            self.0
                .write_str(s.get(clean_from..at).unwrap_or_default())?;
            if escape.is_empty() {
                self.0.write_str("\\u00")?;
                self.0.write_char(char::from(HEX[usize::from(b >> 4)]))?;
                self.0.write_char(char::from(HEX[usize::from(b & 0xf)]))?;
            } else {
                self.0.write_str(escape)?;
            }
            clean_from = at + 1;
        }
        self.0.write_str(s.get(clean_from..).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::{MakeWriter, layer};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Lines written by one layer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let mut lines = self.0.lock().map_err(|_| io::Error::other("poisoned"))?;
            lines.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl MakeWriter<'_> for Captured {
        type Writer = Captured;

        fn make_writer(&self) -> Captured {
            self.clone()
        }
    }

    impl Captured {
        fn text(&self) -> String {
            let bytes = self.0.lock().expect("no writer panicked").clone();
            String::from_utf8(bytes).expect("log lines are UTF-8")
        }
    }

    /// One instant for both formatters.
    struct Noon;

    impl FormatTime for Noon {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            w.write_str("2026-11-29T12:00:00.000001Z")
        }
    }

    #[derive(Debug)]
    struct Unreachable;

    impl std::fmt::Display for Unreachable {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("database unreachable")
        }
    }

    impl std::error::Error for Unreachable {}

    #[derive(Debug)]
    struct WriteFailed(Unreachable);

    impl std::fmt::Display for WriteFailed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("decision log write failed")
        }
    }

    impl std::error::Error for WriteFailed {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// Lines of every kind the service writes, and the field kinds and characters a log line
    /// can meet: 13 lines.
    fn log_every_kind() {
        tracing::info!("policy active");
        tracing::warn!(
            version = "2026.11.1",
            records = 31u64,
            offset = -2i64,
            enabled = true,
            ratio = 1.5f64,
            undefined = f64::NAN,
            code = ?tonic::Code::Ok,
            address = %"127.0.0.1:50051",
            "serving {}",
            "gRPC"
        );
        tracing::error!(
            quoted = "say \"no\" \\ then\ttab",
            unicode = "Ki-67 8 % — café",
            control = "bell\x07",
            r#type = "raw identifier",
            bytes = ?b"ab",
            "a message with \x1b[31m colour, \u{9b} a C1 control, \"quotes\" and a\nnew line"
        );
        let failure = WriteFailed(Unreachable);
        tracing::error!(
            error = &failure as &(dyn std::error::Error + 'static),
            "write failed"
        );
        let unreachable = Unreachable;
        tracing::error!(error = &unreachable as &(dyn std::error::Error + 'static));
        tracing::debug!(only = "fields");
        let call = tracing::info_span!(
            "call",
            method = %"EvaluateEligibility",
            trace_id = %"4bf92f3577b34da6a3ce929d0e0e4736",
            caller = tracing::field::Empty,
            decision_id = tracing::field::Empty,
        );
        let in_call = call.enter();
        call.record("caller", "mdt-workflow \"north\"");
        call.record("decision_id", tracing::field::display("01a227cf-9aff-77fa"));
        tracing::info!(code = ?tonic::Code::Ok, micros = 12u64, "call finished");
        let patient = tracing::debug_span!("patient", n = 1u64, r#kind = ?"screened", ok = false);
        patient.in_scope(|| tracing::warn!(received = 3u64, "inside two spans"));
        tracing::info_span!("empty").in_scope(|| tracing::trace!(x = 1u64));
        call.record("caller", "recorded twice");
        tracing::info!("after a field is recorded again");
        tracing::info!(parent: None, "a root event inside a span");
        tracing::info!(parent: &patient, "an event with an explicit parent");
        drop(in_call);
        tracing::info!("stopped");
    }

    #[test]
    fn text_lines_are_tracing_subscribers_lines() {
        let (ours, theirs) = (Captured::default(), Captured::default());
        let subscriber = tracing_subscriber::registry()
            .with(
                layer()
                    .with_writer(theirs.clone())
                    .with_ansi(false)
                    .with_target(false)
                    .with_timer(Noon),
            )
            .with(
                layer()
                    .with_writer(ours.clone())
                    .with_ansi(false)
                    .fmt_fields(TextFields)
                    .event_format(TextLine { timer: Noon }),
            );
        tracing::subscriber::with_default(subscriber, log_every_kind);
        let (ours, theirs) = (ours.text(), theirs.text());
        // One of the 13 messages has a new line in it.
        assert_eq!(theirs.lines().count(), 14, "{theirs}");
        assert_eq!(ours, theirs);
    }

    #[test]
    fn json_lines_are_tracing_subscribers_lines() {
        let (ours, theirs) = (Captured::default(), Captured::default());
        let subscriber = tracing_subscriber::registry()
            .with(
                layer()
                    .with_writer(theirs.clone())
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_timer(Noon),
            )
            .with(
                layer()
                    .with_writer(ours.clone())
                    .with_ansi(false)
                    .fmt_fields(JsonFields)
                    .event_format(JsonLine { timer: Noon }),
            );
        tracing::subscriber::with_default(subscriber, log_every_kind);
        let (ours, theirs) = (ours.text(), theirs.text());
        assert_eq!(theirs.lines().count(), 13, "{theirs}");
        assert_eq!(ours.lines().count(), 13, "{ours}");
        for (our, their) in ours.lines().zip(theirs.lines()) {
            let our_line: serde_json::Value = serde_json::from_str(our).expect("our line is JSON");
            let their_line: serde_json::Value = serde_json::from_str(their).expect("JSON");
            assert_eq!(our_line, their_line, "\nours:   {our}\ntheirs: {their}");
            // Outside spans (where no keys are sorted) the bytes are the same too.
            if their_line.get("span").is_none() {
                assert_eq!(our, their);
            }
        }
    }

    #[test]
    fn the_clock_writes_the_time_as_tracing_subscriber_does() {
        let read = |text: &str| {
            chrono::DateTime::parse_from_rfc3339(text)
                .unwrap_or_else(|e| panic!("{text} is not RFC 3339: {e}"))
        };
        let mut theirs = String::new();
        tracing_subscriber::fmt::time::SystemTime
            .format_time(&mut Writer::new(&mut theirs))
            .expect("the time is written");
        // The second call writes this thread's second from memory.
        for _ in 0..2 {
            let mut ours = String::new();
            Clock
                .format_time(&mut Writer::new(&mut ours))
                .expect("the time is written");
            assert_eq!(ours.len(), theirs.len(), "{ours} and {theirs}");
            assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
            let apart = read(&ours) - read(&theirs);
            assert!(apart.num_seconds().abs() < 2, "{ours} and {theirs}");
        }
    }
}
