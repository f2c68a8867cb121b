//! `net-pathway-load`: a load generator built on the client library. It measures a running
//! net-pathway server: first grpc.health.v1 `Check` as the baseline (what the framework alone
//! costs), then the chosen RPC with the same connections, concurrency and duration, and
//! prints calls (or patients) per second, latency percentiles and the ratio to the baseline.
//! With `--rounds N` it alternates the two phases N times and reports each round's ratio,
//! their median and the pooled figures.
//!
//! It targets 127.0.0.1:50051 unless given another address. See docs/performance.md.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use net_pathway_client::pb;
use net_pathway_client::{ClientOptions, NetPathwayClient};
use prost_reflect::{DescriptorPool, DynamicMessage};

/// mimalloc, as the server uses: decoding each answer allocates its strings and lists, and with
/// the system allocator that was a sixth of the generator's time on the cores it shares with
/// the server.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Prints a line of the report. A reader that went away (`| head -1`) ends the run quietly,
/// where `println!` would panic on the closed pipe.
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write;
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Rpc {
    /// Unary EvaluateEligibility.
    Eligibility,
    /// Unary ClassifyFunding.
    Funding,
    /// ScreenCohort: patients over bidirectional streams (eligibility and funding each).
    Screen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum View {
    Basic,
    Full,
}

/// How FULL answers cite their sources (CitationStyle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Citations {
    /// Each item with its full citation (the server's default, deprecated).
    Inline,
    /// Each source and criterion statement once per answer.
    Shared,
}

/// Load generator for net-pathway.
#[derive(Debug, Parser)]
#[command(name = "net-pathway-load", version, about)]
struct Args {
    /// Server to load: loopback unless you name another.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// HTTP/2 connections, shared round-robin by the workers.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls in flight at once (unary), or open streams (screen).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds measured, per phase.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of unmeasured warm-up before each phase.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    #[arg(long, value_enum, default_value_t = Rpc::Eligibility)]
    rpc: Rpc,
    #[arg(long, value_enum, default_value_t = View::Basic)]
    view: View,
    /// How FULL answers cite their sources.
    #[arg(long, value_enum, default_value_t = Citations::Inline)]
    citations: Citations,
    /// Patient mix: JSON lines, each an EvaluateEligibilityRequest in the proto JSON mapping
    /// (its patient and therapies are used). Default: examples/load/patient-mix.jsonl.
    #[arg(long)]
    mix: Option<PathBuf>,
    /// Patients each stream keeps unanswered at most (screen).
    #[arg(long, default_value_t = 256)]
    stream_window: usize,
    /// Bearer token sent with every call.
    #[arg(long, env = "NETPATHWAY_TOKEN")]
    token: Option<String>,
    /// Skip the health Check baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Alternate the baseline and the RPC this many times, each phase `--duration` seconds,
    /// and report each round's ratio and their median: on a shared machine whose speed
    /// drifts, a ratio of two phases taken seconds apart moves less than one of two long ones.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Write each request as a gRPC-framed body into this directory, for an independent load
    /// generator such as h2load (`-d FILE`), and exit without calling the server.
    #[arg(long, value_name = "DIR")]
    write_frames: Option<PathBuf>,
    /// Patients in the pre-framed ScreenCohort body (`screen-cohort.grpc`): the mix in turn,
    /// one stream's worth, sent whole and then half-closed.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    cohort_patients: u32,
    /// Ask each mix patient's eligibility once at the view and print what the answer's bytes
    /// are (criteria's citations, descriptions, values, explanations, the rest), then exit.
    #[arg(long)]
    answer_bytes: bool,
    /// The server's process id, when it runs on this machine (Linux): each phase then also
    /// reports the CPU time per call (or patient) that the server and this generator spent,
    /// user and system, and how much more than the baseline's each spent per call.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
}

const DEFAULT_MIX: &str = include_str!("../../examples/load/patient-mix.jsonl");

fn read_mix(args: &Args) -> Result<Vec<pb::EvaluateEligibilityRequest>, String> {
    let (name, text) = match &args.mix {
        Some(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
        ),
        None => ("examples/load/patient-mix.jsonl".into(), DEFAULT_MIX.into()),
    };
    let pool = DescriptorPool::decode(net_pathway_client::FILE_DESCRIPTOR_SET)
        .map_err(|e| format!("descriptor set: {e}"))?;
    let descriptor = pool
        .get_message_by_name("netpathway.v1.EvaluateEligibilityRequest")
        .ok_or("EvaluateEligibilityRequest is not in the descriptor set")?;
    let mut mix = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let mut de = serde_json::Deserializer::from_str(line);
        let dynamic = DynamicMessage::deserialize(descriptor.clone(), &mut de)
            .map_err(|e| format!("{name}:{}: {e}", i + 1))?;
        let mut request: pb::EvaluateEligibilityRequest = dynamic
            .transcode_to()
            .map_err(|e| format!("{name}:{}: {e}", i + 1))?;
        request.view = match args.view {
            View::Basic => pb::EvaluationView::Basic as i32,
            View::Full => pb::EvaluationView::Full as i32,
        };
        request.citations = match args.citations {
            Citations::Inline => pb::CitationStyle::Inline as i32,
            Citations::Shared => pb::CitationStyle::Shared as i32,
        };
        request.request_id.clear();
        mix.push(request);
    }
    if mix.is_empty() {
        return Err(format!("{name}: no patients"));
    }
    Ok(mix)
}

/// The same patient, therapies, date and view, asked of the funding service.
fn funding_request(request: pb::EvaluateEligibilityRequest) -> pb::ClassifyFundingRequest {
    pb::ClassifyFundingRequest {
        request_id: request.request_id,
        patient: request.patient,
        therapies: request.therapies,
        as_of_date: request.as_of_date,
        view: request.view,
        citations: request.citations,
    }
}

/// A gRPC length-prefixed message: one flag byte (uncompressed), a big-endian length, the bytes.
fn grpc_frame(message: &impl prost::Message) -> Vec<u8> {
    let mut frame = Vec::new();
    push_grpc_frame(&mut frame, message);
    frame
}

/// Appends one length-prefixed message to a body (a stream's body is its messages in turn).
fn push_grpc_frame(body: &mut Vec<u8>, message: &impl prost::Message) {
    let len = message.encoded_len();
    body.reserve(5 + len);
    body.push(0);
    body.extend_from_slice(&(len as u32).to_be_bytes());
    message.encode_raw(body);
}

/// A mix patient's therapies, date and view, asked in a screening stream under `correlation_id`.
fn screening_request(
    template: &pb::EvaluateEligibilityRequest,
    correlation_id: String,
) -> pb::ScreenCohortRequest {
    pb::ScreenCohortRequest {
        correlation_id,
        patient: template.patient.clone(),
        therapies: template.therapies.clone(),
        as_of_date: template.as_of_date,
        view: template.view,
        citations: template.citations,
    }
}

/// Writes the Check request, every mix patient's eligibility and funding request, and one
/// ScreenCohort stream of `cohort_patients` patients, framed.
fn write_frames(
    dir: &std::path::Path,
    mix: &[pb::EvaluateEligibilityRequest],
    cohort_patients: u32,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let write = |name: String, frame: Vec<u8>| {
        let path = dir.join(name);
        std::fs::write(&path, frame).map_err(|e| format!("{}: {e}", path.display()))?;
        report!("{}", path.display());
        Ok::<(), String>(())
    };
    write(
        "health-check.grpc".into(),
        grpc_frame(&tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        }),
    )?;
    for (i, request) in mix.iter().enumerate() {
        write(format!("eligibility-{}.grpc", i + 1), grpc_frame(request))?;
        write(
            format!("funding-{}.grpc", i + 1),
            grpc_frame(&funding_request(request.clone())),
        )?;
    }
    // One ScreenCohort stream's whole body: the server answers every patient, then the stream
    // ends when the body does.
    let mut body = Vec::new();
    for n in 0..cohort_patients as usize {
        let request = screening_request(&mix[n % mix.len()], (n + 1).to_string());
        push_grpc_frame(&mut body, &request);
    }
    write("screen-cohort.grpc".into(), body)
}

/// Bytes a part of a criterion result takes as prost writes it (key, length and contents; an
/// empty field none): the result's length less its length with the part cleared.
fn part_bytes(result: &pb::CriterionResult, clear: impl Fn(&mut pb::CriterionResult)) -> usize {
    use prost::Message;
    let mut without = result.clone();
    clear(&mut without);
    result.encoded_len() - without.encoded_len()
}

/// One line per mix patient: the FULL eligibility and funding answers' sizes on the wire,
/// citing inline (deprecated) and shared, and what the inline eligibility answer's bytes are,
/// each part counted as the bytes of its fields (docs/performance.md, FULL view).
#[allow(deprecated)] // Measures the inline form's citations and statements.
async fn answer_bytes(
    client: &NetPathwayClient,
    mix: &[pb::EvaluateEligibilityRequest],
) -> Result<(), String> {
    use prost::Message;
    report!(
        "{:>7} {:>8} {:>14} {:>8} {:>14} {:>8} {:>13} {:>12} {:>7} {:>12}  distinct citations/criteria",
        "patient",
        "inline",
        "shared",
        "funding",
        "shared",
        "criteria",
        "citations",
        "descriptions",
        "values",
        "explanations"
    );
    let (mut inline_total, mut shared_total) = (0, 0);
    for (n, request) in mix.iter().enumerate() {
        let styled = |style: pb::CitationStyle| pb::EvaluateEligibilityRequest {
            view: pb::EvaluationView::Full as i32,
            citations: style as i32,
            ..request.clone()
        };
        let failed = |e: tonic::Status| format!("patient {}: {e}", n + 1);
        let answer = client
            .evaluate_eligibility(styled(pb::CitationStyle::Inline))
            .await
            .map_err(failed)?;
        let shared = client
            .evaluate_eligibility(styled(pb::CitationStyle::Shared))
            .await
            .map_err(failed)?
            .encoded_len();
        let funding = client
            .classify_funding(funding_request(styled(pb::CitationStyle::Inline)))
            .await
            .map_err(failed)?
            .encoded_len();
        let funding_shared = client
            .classify_funding(funding_request(styled(pb::CitationStyle::Shared)))
            .await
            .map_err(failed)?
            .encoded_len();
        let criteria: Vec<&pb::CriterionResult> =
            answer.therapies.iter().flat_map(|t| &t.criteria).collect();
        let sum = |clear: &dyn Fn(&mut pb::CriterionResult)| -> usize {
            criteria.iter().map(|c| part_bytes(c, clear)).sum()
        };
        let citations = sum(&|c| c.source = None);
        let descriptions = sum(&|c| c.description.clear());
        let values = sum(&|c| c.values_used.clear());
        let explanations = sum(&|c| c.explanation.clear());
        let total = answer.encoded_len();
        inline_total += total;
        shared_total += shared;
        let sources: std::collections::HashSet<&str> = criteria
            .iter()
            .filter_map(|c| c.source.as_ref().map(|s| s.id.as_str()))
            .collect();
        let distinct: std::collections::HashSet<&str> =
            criteria.iter().map(|c| c.criterion_id.as_str()).collect();
        let of = |part: usize, whole: usize| {
            format!("{part} ({:.0} %)", 100.0 * part as f64 / whole as f64)
        };
        report!(
            "{:>7} {:>8} {:>14} {:>8} {:>14} {:>8} {:>13} {:>12} {:>7} {:>12}  {}/{}",
            n + 1,
            total,
            of(shared, total),
            funding,
            of(funding_shared, funding),
            criteria.len(),
            of(citations, total),
            descriptions,
            values,
            explanations,
            sources.len(),
            distinct.len()
        );
    }
    report!(
        "eligibility, every patient: {inline_total} bytes inline, {shared_total} shared ({:.1} %)",
        100.0 * shared_total as f64 / inline_total as f64
    );
    Ok(())
}

/// CPU time a process has used, from /proc/PID/stat.
#[derive(Debug, Clone, Copy, Default)]
struct CpuTime {
    user: Duration,
    system: Duration,
}

impl CpuTime {
    /// `pid` is a process id or `self`.
    fn of(pid: &str) -> Result<CpuTime, String> {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        CpuTime::parse(&stat).map_err(|e| format!("{path}: {e}"))
    }

    /// User and system time from a /proc/PID/stat line: fields 14 and 15, in clock ticks of
    /// USER_HZ, which is 100 per second on x86-64 and arm64 Linux (proc(5), sysconf(3)).
    fn parse(stat: &str) -> Result<CpuTime, String> {
        // The command name (field 2) may hold spaces and parentheses: fields are counted from
        // after its last ')', where field 3 (state) comes first.
        let (_, after_name) = stat
            .rsplit_once(')')
            .ok_or("no command name in parentheses")?;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = |field: usize| {
            fields
                .get(field - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .map(|t| Duration::from_millis(t * 10))
                .ok_or_else(|| format!("field {field} is not a tick count"))
        };
        Ok(CpuTime {
            user: ticks(14)?,
            system: ticks(15)?,
        })
    }

    fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }

    fn plus(self, other: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user + other.user,
            system: self.system + other.system,
        }
    }

    fn total(self) -> Duration {
        self.user + self.system
    }
}

/// The server's resident memory from /proc/PID/status: its peak since it started (VmHWM) and
/// now (VmRSS), in kB.
fn resident_memory(pid: &str) -> Result<(u64, u64), String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let kb = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .ok_or_else(|| format!("{path}: no {name} in kB"))
    };
    Ok((kb("VmHWM:")?, kb("VmRSS:")?))
}

/// The CPU the server and this generator used over a phase's measured seconds.
#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    server: CpuTime,
    generator: CpuTime,
}

/// Reads both processes' CPU time at the start and end of a phase's measured window.
#[derive(Debug, Clone)]
struct CpuMeter {
    server: String,
}

impl CpuMeter {
    fn read(&self) -> Result<CpuUse, String> {
        Ok(CpuUse {
            server: CpuTime::of(&self.server)?,
            generator: CpuTime::of("self")?,
        })
    }

    /// What both used from `from` to `until` (None, said on stderr, if either could not
    /// be read: the server may have stopped).
    async fn measure(meter: Option<&CpuMeter>, from: Instant, until: Instant) -> Option<CpuUse> {
        let meter = meter?;
        tokio::time::sleep_until(from.into()).await;
        let start = meter.read();
        tokio::time::sleep_until(until.into()).await;
        match (start, meter.read()) {
            (Ok(start), Ok(end)) => Some(CpuUse {
                server: end.server.since(start.server),
                generator: end.generator.since(start.generator),
            }),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("CPU time not measured: {e}");
                None
            }
        }
    }
}

/// What one phase measured.
struct Phase {
    name: String,
    completed: u64,
    failed: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    /// With `--server-pid`: the CPU each process used over the measured seconds.
    cpu: Option<CpuUse>,
}

/// What one worker or stream measured: its latencies, successes and failures.
type Tally = (Histogram<u64>, u64, u64);

impl Phase {
    /// Merges what every worker measured in the window `from` to `until`, and with a meter
    /// the CPU both processes used in it.
    async fn gather(
        name: String,
        (from, until): (Instant, Instant),
        workers: Vec<tokio::task::JoinHandle<Tally>>,
        meter: Option<&CpuMeter>,
    ) -> Phase {
        let mut phase = Phase {
            name,
            completed: 0,
            failed: 0,
            elapsed: until.duration_since(from),
            latency: histogram(),
            cpu: CpuMeter::measure(meter, from, until).await,
        };
        for worker in workers {
            if let Ok((latency, ok, failed)) = worker.await {
                let _ = phase.latency.add(latency);
                phase.completed += ok;
                phase.failed += failed;
            }
        }
        phase
    }

    /// The rounds' phases as one: their calls, failures, measured time and latencies.
    fn pooled(name: &str, phases: &[Phase]) -> Phase {
        let mut pooled = Phase {
            name: name.into(),
            completed: 0,
            failed: 0,
            elapsed: Duration::ZERO,
            latency: histogram(),
            cpu: Some(CpuUse::default()),
        };
        for phase in phases {
            pooled.completed += phase.completed;
            pooled.failed += phase.failed;
            pooled.elapsed += phase.elapsed;
            let _ = pooled.latency.add(&phase.latency);
            // Pooled CPU only when every round's was measured.
            pooled.cpu = match (pooled.cpu, phase.cpu) {
                (Some(a), Some(b)) => Some(CpuUse {
                    server: a.server.plus(b.server),
                    generator: a.generator.plus(b.generator),
                }),
                _ => None,
            };
        }
        pooled
    }

    /// Microseconds of CPU per call (or patient).
    fn per_call(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / (self.completed.max(1) as f64)
    }

    fn rate(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// This phase's rate as a percentage of the baseline's.
    fn ratio_to(&self, baseline: &Phase) -> f64 {
        100.0 * self.rate() / baseline.rate().max(f64::MIN_POSITIVE)
    }

    fn print(&self, unit: &str) {
        let us = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        report!(
            "{:<36} {:>10.0} {unit}/s  p50 {:>7.3} ms  p90 {:>7.3} ms  p99 {:>7.3} ms  p99.9 {:>7.3} ms  ({} ok, {} failed, {:.1} s)",
            self.name,
            self.rate(),
            us(0.50),
            us(0.90),
            us(0.99),
            us(0.999),
            self.completed,
            self.failed,
            self.elapsed.as_secs_f64()
        );
        if let Some(cpu) = self.cpu {
            let cores = |t: CpuTime| t.total().as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9);
            report!(
                "{:<36} CPU per {}: net-pathway {:.1} µs user + {:.1} µs system ({:.2} cores), net-pathway-load {:.1} + {:.1} µs ({:.2} cores)",
                "",
                unit.trim_end_matches('s'),
                self.per_call(cpu.server.user),
                self.per_call(cpu.server.system),
                cores(cpu.server),
                self.per_call(cpu.generator.user),
                self.per_call(cpu.generator.system),
                cores(cpu.generator)
            );
        }
    }

    /// How much more CPU per call each process spent in this phase than in the baseline.
    fn cpu_over(&self, baseline: &Phase) -> Option<(f64, f64)> {
        let (mine, base) = (self.cpu?, baseline.cpu?);
        Some((
            self.per_call(mine.server.total()) - baseline.per_call(base.server.total()),
            self.per_call(mine.generator.total()) - baseline.per_call(base.generator.total()),
        ))
    }
}

/// The middle of sorted values (the mean of the middle two for an even count).
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn histogram() -> Histogram<u64> {
    // Microseconds from 1 µs to 60 s, 3 significant figures.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid")
}

/// The delay a shed call's google.rpc.RetryInfo asks for, if it has one.
fn retry_delay(status: &tonic::Status) -> Option<Duration> {
    use tonic_types::StatusExt;
    status.get_error_details().retry_info()?.retry_delay
}

/// Runs `concurrency` workers calling `call` until warm-up plus duration have passed; only
/// calls that start after the warm-up are measured.
async fn unary<F, Fut>(name: String, args: &Args, call: &Arc<F>, meter: Option<&CpuMeter>) -> Phase
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let started = Instant::now();
    let measure_from = started + Duration::from_secs(args.warmup);
    let stop = measure_from + Duration::from_secs(args.duration);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|worker| {
            let call = Arc::clone(call);
            tokio::spawn(async move {
                let mut latency = histogram();
                let (mut ok, mut failed) = (0u64, 0u64);
                let mut n = worker as u64;
                loop {
                    let begun = Instant::now();
                    if begun >= stop {
                        break;
                    }
                    let result = call(worker, n).await;
                    n += 1;
                    if begun >= measure_from {
                        match result {
                            Ok(()) => {
                                ok += 1;
                                let _ = latency.record(begun.elapsed().as_micros() as u64);
                            }
                            Err(_) => failed += 1,
                        }
                    }
                    // As a well-behaved caller does: a shed call's worker waits as RetryInfo
                    // asks before its next call.
                    if let Some(delay) = result.err().as_ref().and_then(retry_delay) {
                        tokio::time::sleep(delay).await;
                    }
                }
                (latency, ok, failed)
            })
        })
        .collect();
    // Calls are counted when they start inside the measured window.
    Phase::gather(name, (measure_from, stop), workers, meter).await
}

/// Streams patients on `args.concurrency` streams, each keeping up to `stream_window`
/// unanswered; latency is from sending a patient to receiving its answer.
async fn screen(
    name: String,
    args: &Args,
    clients: &[NetPathwayClient],
    mix: Arc<Vec<pb::EvaluateEligibilityRequest>>,
    meter: Option<&CpuMeter>,
) -> Phase {
    let started = Instant::now();
    let measure_from = started + Duration::from_secs(args.warmup);
    let stop = measure_from + Duration::from_secs(args.duration);
    let window = args.stream_window.max(1);
    let streams: Vec<_> = (0..args.concurrency)
        .map(|s| {
            let client = clients[s % clients.len()].clone();
            let mix = Arc::clone(&mix);
            tokio::spawn(async move {
                let mut latency = histogram();
                let (mut ok, mut failed) = (0u64, 0u64);
                let (tx, rx) = tokio::sync::mpsc::channel::<pb::ScreenCohortRequest>(window);
                let credits = Arc::new(tokio::sync::Semaphore::new(window));
                let sent_at: Arc<std::sync::Mutex<std::collections::HashMap<u64, Instant>>> =
                    Arc::default();
                let sender = {
                    let (credits, sent_at, mix) =
                        (Arc::clone(&credits), Arc::clone(&sent_at), Arc::clone(&mix));
                    tokio::spawn(async move {
                        let mut n = 0u64;
                        while Instant::now() < stop {
                            let Ok(permit) = credits.acquire().await else {
                                break;
                            };
                            permit.forget();
                            let request =
                                screening_request(&mix[(n as usize) % mix.len()], n.to_string());
                            if let Ok(mut map) = sent_at.lock() {
                                map.insert(n, Instant::now());
                            }
                            if tx.send(request).await.is_err() {
                                break;
                            }
                            n += 1;
                        }
                    })
                };
                let answers = client
                    .screen_cohort(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await;
                let mut answers = match answers {
                    Ok(a) => a,
                    Err(e) => {
                        eprintln!("stream {s} refused: {e}");
                        sender.abort();
                        return (latency, ok, failed + 1);
                    }
                };
                while let Ok(Some(answer)) = answers.message().await {
                    credits.add_permits(1);
                    let now = Instant::now();
                    let sent = answer
                        .correlation_id
                        .parse::<u64>()
                        .ok()
                        .and_then(|n| sent_at.lock().ok().and_then(|mut m| m.remove(&n)));
                    if let Some(sent) = sent
                        && sent >= measure_from
                        && now <= stop
                    {
                        match answer.result {
                            Some(pb::screen_cohort_response::Result::Screened(_)) => {
                                ok += 1;
                                let _ = latency.record(now.duration_since(sent).as_micros() as u64);
                            }
                            _ => failed += 1,
                        }
                    }
                }
                let _ = sender.await;
                (latency, ok, failed)
            })
        })
        .collect();
    Phase::gather(name, (measure_from, stop), streams, meter).await
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let mix = match read_mix(&args) {
        Ok(m) => Arc::new(m),
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(dir) = &args.write_frames {
        return match write_frames(dir, &mix, args.cohort_patients) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let meter = args.server_pid.map(|pid| CpuMeter {
        server: pid.to_string(),
    });
    if let Some(Err(e)) = meter.as_ref().map(CpuMeter::read) {
        eprintln!("--server-pid: {e}");
        return std::process::ExitCode::from(2);
    }
    // No retries in the client: a shed call is counted here, and its worker waits as its
    // RetryInfo asks before its next call.
    let options = ClientOptions {
        bearer_token: args.token.clone(),
        deadline: Duration::from_secs(30),
        retries: 0,
        ..ClientOptions::default()
    };
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        match NetPathwayClient::connect_with(args.target.clone(), options.clone()).await {
            Ok(c) => clients.push(c),
            Err(e) => {
                eprintln!("{e}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    if args.answer_bytes {
        return match answer_bytes(&clients[0], &mix).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    report!(
        "target {}  connections {}  concurrency {}  {} s (+{} s warm-up) per phase, {} round{}  rpc {:?}  view {:?}  mix {} patients",
        args.target,
        clients.len(),
        args.concurrency,
        args.duration,
        args.warmup,
        args.rounds,
        if args.rounds == 1 { "" } else { "s" },
        args.rpc,
        args.view,
        mix.len()
    );
    let clients = Arc::new(clients);

    let check = (!args.no_baseline).then(|| {
        let health: Arc<Vec<_>> = Arc::new(
            clients
                .iter()
                .map(|c| tonic_health::pb::health_client::HealthClient::new(c.channel()))
                .collect(),
        );
        Arc::new(move |worker: usize, _: u64| {
            let mut client = health[worker % health.len()].clone();
            async move {
                client
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(|_| ())
            }
        })
    });
    let unary_call = {
        let (clients, mix, rpc) = (Arc::clone(&clients), Arc::clone(&mix), args.rpc);
        Arc::new(move |worker: usize, n: u64| {
            let client = clients[worker % clients.len()].clone();
            let request = mix[(n as usize) % mix.len()].clone();
            async move {
                if rpc == Rpc::Eligibility {
                    client.evaluate_eligibility(request).await.map(|_| ())
                } else {
                    client
                        .classify_funding(funding_request(request))
                        .await
                        .map(|_| ())
                }
            }
        })
    };
    let (name, unit) = match args.rpc {
        Rpc::Eligibility => ("EvaluateEligibility".to_string(), "calls"),
        Rpc::Funding => ("ClassifyFunding".to_string(), "calls"),
        Rpc::Screen => (
            format!("ScreenCohort ({} streams)", args.concurrency),
            "patients",
        ),
    };
    const CHECK: &str = "grpc.health.v1 Check";
    let (mut baselines, mut phases) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let label = |name: &str| match args.rounds {
            1 => name.to_string(),
            rounds => format!("{name} [round {round}/{rounds}]"),
        };
        if let Some(check) = &check {
            let baseline = unary(label(CHECK), &args, check, meter.as_ref()).await;
            baseline.print("calls");
            baselines.push(baseline);
        }
        let phase = match args.rpc {
            Rpc::Eligibility | Rpc::Funding => {
                unary(label(&name), &args, &unary_call, meter.as_ref()).await
            }
            Rpc::Screen => {
                screen(
                    label(&name),
                    &args,
                    &clients,
                    Arc::clone(&mix),
                    meter.as_ref(),
                )
                .await
            }
        };
        phase.print(unit);
        if let (Some(baseline), true) = (baselines.last(), args.rounds > 1) {
            report!(
                "round {round}: {:.1} % of the baseline",
                phase.ratio_to(baseline)
            );
        }
        phases.push(phase);
    }
    let phase = Phase::pooled(&name, &phases);
    let baseline = (!baselines.is_empty()).then(|| Phase::pooled(CHECK, &baselines));
    if args.rounds > 1 {
        report!("all {} rounds:", args.rounds);
        if let Some(baseline) = &baseline {
            baseline.print("calls");
        }
        phase.print(unit);
    }
    if let Some(baseline) = baseline {
        let mut ratios: Vec<f64> = phases
            .iter()
            .zip(&baselines)
            .map(|(p, b)| p.ratio_to(b))
            .collect();
        ratios.sort_by(f64::total_cmp);
        match ratios.as_slice() {
            [_] | [] => report!(
                "ratio to the health Check baseline: {:.1} %",
                phase.ratio_to(&baseline)
            ),
            [lowest, .., highest] => report!(
                "ratio to the health Check baseline: {:.1} % (all rounds pooled); median of the rounds {:.1} %, from {:.1} to {:.1} %",
                phase.ratio_to(&baseline),
                median(&ratios),
                lowest,
                highest
            ),
        }
        // A patient on a stream is not a call: only unary phases compare with Check's CPU.
        if let (Some((server, generator)), false) =
            (phase.cpu_over(&baseline), args.rpc == Rpc::Screen)
        {
            report!(
                "CPU per call beyond a Check call's: net-pathway {server:+.1} µs, net-pathway-load {generator:+.1} µs"
            );
        }
    }
    if let Some(meter) = &meter {
        match resident_memory(&meter.server) {
            Ok((peak, now)) => report!(
                "server resident memory: {:.1} MB at its peak since it started (VmHWM), {:.1} MB now (VmRSS)",
                peak as f64 / 1024.0,
                now as f64 / 1024.0
            ),
            Err(e) => eprintln!("resident memory not read: {e}"),
        }
    }
    if phase.failed > 0 {
        eprintln!("{} calls failed", phase.failed);
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_a_command_name_with_spaces_and_parentheses() {
        // A line as Linux writes it, for a command named "a) b": utime 250 and stime 75 ticks.
        let stat = "4242 (a) b) S 1 4242 4242 0 -1 4194560 120 0 0 0 250 75 0 0 20 0 3 0 100 0 0";
        let cpu = CpuTime::parse(stat).expect("a well-formed line");
        assert_eq!(cpu.user, Duration::from_millis(2500));
        assert_eq!(cpu.system, Duration::from_millis(750));
    }

    #[test]
    fn a_stat_line_without_its_times_is_refused() {
        assert!(CpuTime::parse("4242 (net-pathway) S 1 4242").is_err());
        assert!(CpuTime::parse("no command name").is_err());
    }

    #[test]
    fn this_process_has_a_cpu_time_and_resident_memory() {
        let (peak, now) = resident_memory("self").expect("/proc/self/status has VmHWM and VmRSS");
        assert!(peak >= now && now > 0, "peak {peak} kB, now {now} kB");
        // Reading our own entry works wherever /proc does (CI runs on Linux).
        assert!(CpuTime::of("self").is_ok());
    }

    #[test]
    fn a_phase_reports_cpu_per_call_and_beyond_the_baseline() {
        let phase = |completed, server_us, generator_us| Phase {
            name: String::new(),
            completed,
            failed: 0,
            elapsed: Duration::from_secs(1),
            latency: histogram(),
            cpu: Some(CpuUse {
                server: CpuTime {
                    user: Duration::from_micros(server_us),
                    system: Duration::ZERO,
                },
                generator: CpuTime {
                    user: Duration::from_micros(generator_us),
                    system: Duration::ZERO,
                },
            }),
        };
        // 100k Check calls on one core each side; 60k calls of the RPC on the same cores.
        let (check, rpc) = (
            phase(100_000, 1_000_000, 1_000_000),
            phase(60_000, 1_020_000, 840_000),
        );
        let (server, generator) = rpc.cpu_over(&check).expect("both measured");
        assert!((server - 7.0).abs() < 1e-9, "{server}");
        assert!((generator - 4.0).abs() < 1e-9, "{generator}");
        let pooled = Phase::pooled("rpc", &[rpc, phase(40_000, 680_000, 560_000)]);
        assert_eq!(pooled.completed, 100_000);
        assert_eq!(
            pooled.cpu.map(|c| c.server.total()),
            Some(Duration::from_millis(1700))
        );
    }
}
