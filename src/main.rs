//! The `callgate` command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use callgate::client::{self, CallOptions};
use callgate::config::Config;
use callgate::{telemetry, wav, CancellationToken};
use callgate_handlers::dialect::Dialect;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "callgate",
    version,
    about = "Gateway between phone calls and speech-to-speech AI"
)]
struct Cli {
    /// TOML configuration file (see deploy/callgate.toml); env vars override it.
    #[arg(long, global = true, env = "CALLGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "CALLGATE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve carrier WebSockets (the default).
    Serve,
    /// Play a WAV file into a gateway as a carrier and record the reply.
    Call(CallArgs),
    /// Load the configuration, print every error (or the effective settings) and exit.
    CheckConfig,
    /// Mint a JWT with a configured key (tests, TwiML `<Parameter>` per-call tokens).
    Token(TokenArgs),
    /// Run many concurrent calls against a gateway and report outcomes and reply latency.
    Loadtest(LoadArgs),
    /// Read call records: `calls list`, `calls show <call_sid or key>`.
    Calls {
        #[command(subcommand)]
        what: CallsCommand,
    },
    /// Replay a call tape into a fresh gateway and compare what it sends (exit 1 on any
    /// difference).
    Replay(ReplayArgs),
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// The tape (JSON Lines, from `[tape]`).
    tape: PathBuf,
    /// Play N times faster than recorded (timing-sensitive calls want 1).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
}

#[derive(Subcommand)]
enum CallsCommand {
    /// The most recent calls.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One call with its transcript (JSON).
    Show {
        /// Carrier call id or record key.
        id: String,
    },
}

#[derive(clap::Args)]
struct LoadArgs {
    /// Concurrent calls.
    #[arg(long, default_value_t = 20)]
    calls: usize,
    /// Seconds each call lasts (the file is repeated to fill it).
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Milliseconds between call starts.
    #[arg(long, default_value_t = 50)]
    ramp_ms: u64,
    /// Play stamped 20 ms frames instead of a file (Twilio, μ-law) and time each frame's
    /// round trip: for an upstream that echoes audio (`benches/relay.rs echo`).
    #[arg(long)]
    stamped: bool,
    /// The gateway's /metrics, read before and after the run for the latency it added
    /// (default: the gateway's own host:port, http for ws:// and https for wss://; "" = skip).
    #[arg(long)]
    metrics: Option<String>,
    #[command(flatten)]
    call: CallArgs,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// Key id from [[security.jwt.keys]] (default: the first key).
    #[arg(long)]
    kid: Option<String>,
    /// `sub` claim.
    #[arg(long)]
    sub: Option<String>,
    /// `tenant` claim.
    #[arg(long)]
    tenant: Option<String>,
    /// Bind the token to one call (`call_sid` claim, checked against start.callSid).
    #[arg(long)]
    call_sid: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 300)]
    ttl: u64,
    /// Make the token single-use (a random `jti`).
    #[arg(long)]
    single_use: bool,
}

#[derive(clap::Args)]
struct CallArgs {
    /// Which carrier to play.
    #[arg(long, default_value = "twilio", value_parser = carrier_parser())]
    carrier: Dialect,
    /// Gateway URL; defaults to ws://127.0.0.1:8080/<carrier> (raw audio:
    /// /ws/audio/<call id>).
    #[arg(long)]
    url: Option<String>,
    /// Exotel only: the stream's sample rate (8000, 16000 or 24000).
    #[arg(long, default_value_t = 8000)]
    rate: u32,
    /// WAV file to play (μ-law, A-law or 16-bit PCM at 8, 16 or 24 kHz, mono); needed
    /// except by `loadtest --stamped`.
    #[arg(long)]
    play: Option<PathBuf>,
    /// Write the reply audio here (16-bit PCM WAV at the call's sample rate).
    #[arg(long)]
    record: Option<PathBuf>,
    /// Playback speed (1 = real time).
    #[arg(long, default_value_t = 1.0)]
    pace: f64,
    /// Seconds to wait for the reply after the file ends.
    #[arg(long, default_value_t = 8.0)]
    linger: f64,
    /// Custom parameter for `start` (repeatable): name=value.
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<(String, String)>,
}

/// `--carrier`: any dialect by its name, the names listed in `--help`.
fn carrier_parser() -> impl clap::builder::TypedValueParser<Value = Dialect> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Dialect::ALL.map(Dialect::name))
        .map(|name| Dialect::from_name(&name).expect("one of Dialect::ALL"))
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not name=value"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let json = matches!(cli.log_format, LogFormat::Json);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let telemetry = telemetry::init(telemetry::TelemetryOptions {
                json,
                ..Default::default()
            });
            let result = serve(cli.config).await;
            // Export the spans of the last calls before exiting.
            telemetry.shutdown().await;
            result
        }
        other => {
            telemetry::init_logging(json);
            run_tool(cli.config, other).await
        }
    }
}

async fn run_tool(config: Option<PathBuf>, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => unreachable!("handled by main"),
        Command::CheckConfig => {
            let config = load(config)?;
            println!("configuration OK\n{config:#?}");
            Ok(())
        }
        Command::Call(args) => call(args).await,
        Command::Token(args) => token(config, args),
        Command::Loadtest(args) => loadtest(args).await,
        Command::Replay(args) => replay(args).await,
        Command::Calls { what } => {
            let config = load(config)?;
            // The PostgreSQL client is synchronous: read outside the runtime's threads.
            tokio::task::spawn_blocking(move || calls(&config, what)).await?
        }
    }
}

fn token(path: Option<PathBuf>, args: TokenArgs) -> anyhow::Result<()> {
    callgate_layers::install_crypto();
    let config = load(path)?;
    let jwt = &config.security.jwt;
    let key = match &args.kid {
        Some(kid) => jwt
            .keys
            .iter()
            .find(|k| &k.kid == kid)
            .with_context(|| format!("no key with kid {kid}"))?,
        None => jwt
            .keys
            .first()
            .context("no [[security.jwt.keys]] configured")?,
    };
    let (encoding, algorithm) = callgate::security::encoding_key(key)?;
    let now = jsonwebtoken::get_current_timestamp();
    let claims = callgate_layers::http::auth::Claims {
        iss: jwt.issuer.clone(),
        aud: jwt.audience.clone().into(),
        exp: now + args.ttl,
        sub: args.sub,
        tenant: args.tenant,
        call_sid: args.call_sid,
        jti: args
            .single_use
            .then(|| format!("{:032x}", rand::random::<u128>())),
    };
    let mut header = jsonwebtoken::Header::new(algorithm);
    header.kid = Some(key.kid.clone());
    println!("{}", jsonwebtoken::encode(&header, &claims, &encoding)?);
    Ok(())
}

fn load(path: Option<PathBuf>) -> anyhow::Result<Config> {
    Config::load(path.as_deref(), std::env::vars()).map_err(|e| anyhow::anyhow!("{e}"))
}

async fn serve(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load(path)?;
    let listener = tokio::net::TcpListener::bind(config.listen_addr())
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: draining (a second signal exits at once)");
        signal.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    callgate::run(listener, config, shutdown).await
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn loadtest(args: LoadArgs) -> anyhow::Result<()> {
    // What to play: stamped frames, or the file as a caller taking turns for the whole call.
    let options = if args.stamped {
        None
    } else {
        let (mut options, _) = call_options(&args.call)?;
        let file = options.audio.clone();
        options.repeat_for(&file, Duration::from_secs(args.duration));
        options.linger = Duration::from_secs(3);
        if options.carrier == Dialect::RawAudio && args.call.url.is_none() {
            options.url = "ws://127.0.0.1:8080/ws/audio".into();
        }
        Some(options)
    };
    let url = match (&options, &args.call.url) {
        (Some(options), _) => options.url.clone(),
        (None, Some(url)) => url.clone(),
        (None, None) => "ws://127.0.0.1:8080/twilio".into(),
    };
    // The gateway's own view: its latency histograms, read before and after.
    let metrics_url = args
        .metrics
        .clone()
        .unwrap_or_else(|| client::scrape::metrics_url_of(&url));
    let scrape = || client::scrape::snapshot(&metrics_url);
    let before = scrape().await;
    let started = std::time::Instant::now();
    if let Some(options) = options {
        println!(
            "{} calls of {} s against {}",
            args.calls, args.duration, options.url
        );
        let report = client::load(options, args.calls, Duration::from_millis(args.ramp_ms)).await;
        println!("done in {:.1} s", started.elapsed().as_secs_f64());
        for (code, n) in &report.closes {
            println!(
                "close {:>4}: {n}",
                code.map_or("none".to_owned(), |c| c.to_string())
            );
        }
        println!("failed calls: {}", report.failed());
        for (reason, n) in report.failures.iter().chain(&report.bad_closes) {
            println!("  {n} × {reason}");
        }
        println!(
            "frames:     {} sent, {} received",
            report.frames_sent, report.frames_received
        );
        if let (Some(p50), Some(p95)) = (
            report.first_reply_percentile(50.0),
            report.first_reply_percentile(95.0),
        ) {
            println!("first reply after start: p50 {p50} ms, p95 {p95} ms");
        }
    } else {
        println!(
            "{} stamped calls of {} s against {url}",
            args.calls, args.duration
        );
        let ramp = Duration::from_millis(args.ramp_ms) * args.calls as u32;
        let report = client::stamped::run(&url, args.calls as u32, args.duration, ramp).await;
        println!("done in {:.1} s", started.elapsed().as_secs_f64());
        println!("{}", report.summary(args.duration));
    }
    if let (Some(before), Some(after)) = (before, scrape().await) {
        print!("{}", client::scrape::gateway_latency(&before, &after));
    }
    Ok(())
}

/// `callgate calls list|show`, from whichever store the configuration names.
fn calls(config: &Config, what: CallsCommand) -> anyhow::Result<()> {
    let reader = callgate::records::RecordReader::at(&callgate::records::Location::of(
        &config.records.path,
        &config.records.url,
    ))?;
    match what {
        CallsCommand::List { limit } => {
            println!(
                "{:<22} {:<36} {:<14} {:<10} {:>6} {:>9} {:>6}",
                "KEY", "CALL", "CARRIER", "OUTCOME", "CODE", "SECONDS", "LINES"
            );
            for r in reader.list(limit)? {
                println!(
                    "{:<22} {:<36} {:<14} {:<10} {:>6} {:>9.1} {:>6}",
                    r.key,
                    r.call_sid,
                    r.carrier,
                    r.outcome,
                    r.close_code,
                    r.duration_ms as f64 / 1000.0,
                    r.transcript.len()
                );
            }
        }
        CallsCommand::Show { id } => match reader.show(&id)? {
            Some(record) => println!("{}", serde_json::to_string_pretty(&record)?),
            None => anyhow::bail!("no call {id}"),
        },
    }
    Ok(())
}

/// Options for one call from the command line (the WAV converted to the carrier's format).
fn call_options(
    args: &CallArgs,
) -> anyhow::Result<(CallOptions, callgate_handlers::codec::AudioFormat)> {
    let dialect = args.carrier;
    let play = args.play.as_ref().context("--play FILE.wav is required")?;
    let (wav_format, audio) = wav::read(play)?;
    let mut options = CallOptions::new("", dialect, Vec::new());
    if dialect == Dialect::Exotel {
        options.format = callgate_handlers::codec::AudioFormat::Pcm16 { rate: args.rate };
    }
    options.audio = wav::convert(wav_format, &audio, options.format)?;
    options.url = args.url.clone().unwrap_or_else(|| match dialect {
        Dialect::RawAudio => format!("ws://127.0.0.1:8080/ws/audio/{}", options.call_sid),
        Dialect::Exotel => format!("ws://127.0.0.1:8080/exotel?sample-rate={}", args.rate),
        _ => format!("ws://127.0.0.1:8080/{}", dialect.name()),
    });
    options.pace = args.pace;
    options.linger = Duration::from_secs_f64(args.linger);
    options.custom_parameters = args.params.iter().cloned().collect();
    Ok((options, wav_format))
}

async fn call(args: CallArgs) -> anyhow::Result<()> {
    let dialect = args.carrier;
    let (options, _) = call_options(&args)?;
    let format = options.format;
    println!(
        "calling {} as {} with {} ({} ms of audio)",
        options.url,
        dialect.name(),
        args.play
            .as_deref()
            .unwrap_or(std::path::Path::new(""))
            .display(),
        format.duration_ms(options.audio.len())
    );
    let summary = client::run(options).await?;
    for event in &summary.events {
        let kind = event["event"].as_str().unwrap_or("?");
        if kind != "media" && kind != "playAudio" {
            println!("<- {event}");
        }
    }
    println!("frames sent:      {}", summary.frames_sent);
    println!(
        "frames received:  {} ({} ms of reply audio)",
        summary.frames_received,
        format.duration_ms(summary.received_audio.len())
    );
    println!("marks:            {}", summary.marks.len());
    println!("clears:           {}", summary.clears);
    match summary.first_reply {
        Some(t) => println!("first reply audio {} ms after start", t.as_millis()),
        None => println!("no reply audio"),
    }
    match &summary.close {
        Some((code, reason)) => println!("closed:           {code} {reason}"),
        None => println!("closed:           without a close frame"),
    }
    if let Some(path) = args.record {
        wav::write_as_pcm(&path, format, &summary.received_audio)?;
        println!("reply written to {}", path.display());
    }
    Ok(())
}

/// `callgate replay`: prints the first difference and exits 1, or says the call matched.
async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    callgate_handlers::bridge::install_tls();
    let text = std::fs::read_to_string(&args.tape)
        .with_context(|| format!("reading {}", args.tape.display()))?;
    let tape = callgate::replay::Tape::parse(&text)?;
    let report = callgate::replay::replay(&tape, args.speed).await?;
    match report.first() {
        None => {
            println!(
                "{}: replayed, {} messages match",
                args.tape.display(),
                report.compared
            );
            Ok(())
        }
        Some(difference) => {
            println!("{}: first difference: {difference}", args.tape.display());
            for other in &report.differences[1..] {
                println!("  then: {other}");
            }
            std::process::exit(1);
        }
    }
}
