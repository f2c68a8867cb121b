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
use net_pathway::client::{ClientOptions, NetPathwayClient};
use net_pathway::pb;
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
    let pool = DescriptorPool::decode(net_pathway::FILE_DESCRIPTOR_SET)
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

/// One line per mix patient: the eligibility answer's size on the wire and what its bytes are,
/// each part counted as the bytes of its fields (docs/performance.md, FULL view).
async fn answer_bytes(
    client: &NetPathwayClient,
    mix: &[pb::EvaluateEligibilityRequest],
) -> Result<(), String> {
    use prost::Message;
    report!(
        "{:>7} {:>7} {:>8} {:>13} {:>12} {:>7} {:>12} {:>13}  distinct citations/criteria",
        "patient",
        "bytes",
        "criteria",
        "citations",
        "descriptions",
        "values",
        "explanations",
        "rest"
    );
    for (n, request) in mix.iter().enumerate() {
        let answer = client
            .evaluate_eligibility(request.clone())
            .await
            .map_err(|e| format!("patient {}: {e}", n + 1))?;
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
        let sources: std::collections::HashSet<&str> = criteria
            .iter()
            .filter_map(|c| c.source.as_ref().map(|s| s.id.as_str()))
            .collect();
        let distinct: std::collections::HashSet<&str> =
            criteria.iter().map(|c| c.criterion_id.as_str()).collect();
        let share = |part: usize| format!("{part} ({:.0} %)", 100.0 * part as f64 / total as f64);
        report!(
            "{:>7} {:>7} {:>8} {:>13} {:>12} {:>7} {:>12} {:>13}  {}/{}",
            n + 1,
            total,
            criteria.len(),
            share(citations),
            descriptions,
            values,
            explanations,
            share(total - citations - descriptions - values - explanations),
            sources.len(),
            distinct.len()
        );
    }
    Ok(())
}

/// What one phase measured.
struct Phase {
    name: String,
    completed: u64,
    failed: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

/// What one worker or stream measured: its latencies, successes and failures.
type Tally = (Histogram<u64>, u64, u64);

impl Phase {
    /// Merges what every worker measured.
    async fn gather(
        name: String,
        elapsed: Duration,
        workers: Vec<tokio::task::JoinHandle<Tally>>,
    ) -> Phase {
        let mut phase = Phase {
            name,
            completed: 0,
            failed: 0,
            elapsed,
            latency: histogram(),
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
        };
        for phase in phases {
            pooled.completed += phase.completed;
            pooled.failed += phase.failed;
            pooled.elapsed += phase.elapsed;
            let _ = pooled.latency.add(&phase.latency);
        }
        pooled
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

/// Runs `concurrency` workers calling `call` until warm-up plus duration have passed; only
/// calls that start after the warm-up are measured.
async fn unary<F, Fut>(name: String, args: &Args, call: &Arc<F>) -> Phase
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
                }
                (latency, ok, failed)
            })
        })
        .collect();
    // Calls are counted when they start inside the measured window.
    Phase::gather(name, Duration::from_secs(args.duration), workers).await
}

/// Streams patients on `args.concurrency` streams, each keeping up to `stream_window`
/// unanswered; latency is from sending a patient to receiving its answer.
async fn screen(
    name: String,
    args: &Args,
    clients: &[NetPathwayClient],
    mix: Arc<Vec<pb::EvaluateEligibilityRequest>>,
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
    Phase::gather(name, Duration::from_secs(args.duration), streams).await
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
    let options = ClientOptions {
        bearer_token: args.token.clone(),
        deadline: Duration::from_secs(30),
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
            let baseline = unary(label(CHECK), &args, check).await;
            baseline.print("calls");
            baselines.push(baseline);
        }
        let phase = match args.rpc {
            Rpc::Eligibility | Rpc::Funding => unary(label(&name), &args, &unary_call).await,
            Rpc::Screen => screen(label(&name), &args, &clients, Arc::clone(&mix)).await,
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
    }
    if phase.failed > 0 {
        eprintln!("{} calls failed", phase.failed);
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
