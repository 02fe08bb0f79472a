//! The `perch` command line: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use perch::app;
use perch::config::{Config, DEFAULT_CONFIG_PATH};
use perch::detect::{DetectorConfig, ModelManifest, Provider};

#[derive(Parser)]
#[command(name = "perch", version, about = "Edge video analytics: cameras → detections → events")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (what systemd starts).
    Run {
        #[arg(long, short, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Print one JSON line per processed frame on stdout.
        #[arg(long)]
        print_detections: bool,
    },
    /// Detect objects in images or video files and print one JSON line per detection.
    Detect {
        /// Model manifest (.toml) or the .onnx beside it. Default: the configured or installed model.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Config whose [detector] settings to use (default: /etc/perch/perch.toml if it exists).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Frames per second sampled from videos.
        #[arg(long, default_value_t = 5.0)]
        fps: f64,
        /// Minimum score to report.
        #[arg(long, default_value_t = 0.3)]
        min_score: f32,
        /// Execution providers in order, e.g. `tensorrt,cuda,cpu` (default: the config's, or cpu).
        #[arg(long, value_delimiter = ',')]
        providers: Option<Vec<String>>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Runs the tracker offline on recorded detections and prints what it tracked: one JSON line per
    /// frame (`seq`, `pts_ms`, `tracks`), plus the events it would have sent with --events.
    Track {
        /// Detections: `perch run --print-detections` or `perch detect` lines, or MOTChallenge det.txt
        /// rows with --format mot. Standard input when absent.
        file: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = TrackFormat::Json)]
        format: TrackFormat,
        /// Config whose camera's [camera.track] settings and min_score to use (with --camera).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The camera of --config (default: its first).
        #[arg(long)]
        camera: Option<String>,
        /// Detections from this score on start tracks (default: the camera's min_score, or 0.5).
        #[arg(long)]
        min_score: Option<f32>,
        /// Frame rate of `perch detect` and MOT input.
        #[arg(long, default_value_t = 5.0)]
        fps: f64,
        /// Picture size (WIDTHxHEIGHT) for input that does not carry it (`perch detect`, MOT).
        #[arg(long, default_value = "1920x1080")]
        size: String,
        /// Also print the events (new/update/end messages as the broker would get them).
        #[arg(long)]
        events: bool,
    },
    /// The running service's status: cameras, detector, outbox, recording, OTA (from its local /status).
    Status {
        #[arg(long, short, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Print the JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate a config file; exits non-zero naming each bad key.
    CheckConfig {
        #[arg(default_value = DEFAULT_CONFIG_PATH)]
        file: PathBuf,
    },
    /// Measure per-frame preprocess + inference + postprocess on an image.
    Bench {
        #[arg(long)]
        model: Option<PathBuf>,
        /// Image to run on (decoded once at full size).
        #[arg(long)]
        image: PathBuf,
        #[arg(long, default_value_t = 200)]
        iterations: usize,
        #[arg(long, default_value_t = 20)]
        warmup: usize,
        /// Inference threads (0: ONNX Runtime's default).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        #[arg(long, default_value_t = 0.3)]
        min_score: f32,
        /// Feed the model's full square input, as the Python baseline does, even when the model allows a
        /// rectangular one (`detector.rectangular = false`).
        #[arg(long)]
        square: bool,
    },
    /// Measure the CPU cost of recording N H.264 streams by copy, next to `ffmpeg -c copy -f segment`.
    BenchRecord {
        /// An H.264 MP4 (e.g. 1080p); read as fast as possible by every stream.
        #[arg(long)]
        input: PathBuf,
        /// The first seconds of the same input (`ffmpeg -t 6 -c copy`): the difference between the two runs
        /// of a side is its cost per second of video, start-up taken out.
        #[arg(long, required_unless_present = "side")]
        short: Option<PathBuf>,
        #[arg(long, default_value_t = 4)]
        streams: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value_t = 2.0)]
        segment_s: f64,
        /// Skip the ffmpeg baseline.
        #[arg(long)]
        no_ffmpeg: bool,
        /// Run one side in this process (the driver starts `--side perch` as its child).
        #[arg(long, hide = true, value_parser = ["perch"], requires = "out")]
        side: Option<String>,
        /// Where `--side perch` records.
        #[arg(long, hide = true)]
        out: Option<PathBuf>,
    },
    /// Update bundles: build, sign, verify, inspect (see ota/README.md).
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Updates on this box: install into the inactive slot, status, boot, commit, rollback.
    #[command(subcommand)]
    Ota(OtaCommand),
    /// Models: shadow validation of a candidate beside the current one.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Fleet updates over MQTT: status, staged rollouts, a bundle server, simulated devices.
    #[command(subcommand)]
    Fleet(FleetCommand),
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Run a candidate model beside the current one on the same frames; exit 0 if it may be promoted,
    /// 3 if it is rejected. Prints the verdict with the measured figures (JSON).
    Shadow {
        /// The current model's manifest.
        #[arg(long)]
        current: PathBuf,
        /// The candidate model's manifest.
        #[arg(long)]
        candidate: PathBuf,
        /// Frames per second sampled from videos.
        #[arg(long, default_value_t = 2.0)]
        fps: f64,
        #[arg(long, default_value_t = 0.3)]
        min_score: f32,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Largest share of detections without a counterpart (0.2: 20 %).
        #[arg(long, default_value_t = 0.2)]
        max_disagreement: f64,
        /// Largest p95 latency increase (0.1: +10 %).
        #[arg(long, default_value_t = 0.1)]
        max_latency_increase: f64,
        /// The candidate's error rate must stay below this.
        #[arg(long, default_value_t = 0.02)]
        max_error_rate: f64,
        /// Publish the verdict (retained) on this broker, e.g. mqtt://127.0.0.1:1883.
        #[arg(long)]
        mqtt: Option<String>,
        #[arg(long, default_value = "perch/model/shadow")]
        topic: String,
        /// Images or videos to compare on.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum FleetCommand {
    /// Devices with version, slot, phase, health and last seen, from their retained topics.
    Status {
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        #[arg(long, default_value = "perch")]
        prefix: String,
        /// One JSON line per device.
        #[arg(long)]
        json: bool,
    },
    /// Install a bundle on devices wave by wave; pauses when a wave's failures exceed --max-failures.
    Rollout {
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        /// Where the rollout is saved (resume and abort read it).
        #[arg(long, default_value = "rollout.json")]
        state: PathBuf,
        /// The bundle's http(s):// URL, as devices will fetch it.
        #[arg(long, required_unless_present_any = ["resume", "abort"])]
        bundle: Option<String>,
        /// A file of device ids (one per line) or a glob over known devices, e.g. 'cam-*'.
        #[arg(long, required_unless_present_any = ["resume", "abort"])]
        devices: Option<String>,
        /// Cumulative percentages of the devices per wave.
        #[arg(long, default_value = "1,10,50,100")]
        waves: String,
        /// Pause when more than this share of a wave fails.
        #[arg(long, default_value = "2%")]
        max_failures: String,
        /// A device without an outcome this long after its wave started counts as failed.
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        wave_timeout: std::time::Duration,
        #[arg(long, default_value = "perch")]
        prefix: String,
        /// The bundle is a model release (`…/cmd/model`): each device tries it in shadow, and it counts
        /// as done when promoted, as failed when rejected.
        #[arg(long)]
        model: bool,
        /// Continue the saved rollout (after a pause: with the next wave).
        #[arg(long, conflicts_with = "abort")]
        resume: bool,
        /// Abort the saved rollout; devices still installing are sent cancel.
        #[arg(long)]
        abort: bool,
    },
    /// Serve a directory of bundles over HTTP (labs, tests).
    Serve {
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Run N simulated devices (real OTA agents on file slots) against a broker.
    Simulate {
        #[arg(long, default_value_t = 10)]
        devices: usize,
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        /// Trusted keys of the simulated devices.
        #[arg(long)]
        keyring: PathBuf,
        #[arg(long, default_value = "perch-sim")]
        compatible: String,
        #[arg(long, default_value = "sim-")]
        id_prefix: String,
        #[arg(long, default_value = "perch")]
        prefix: String,
        /// Every install fails the simulated health gate.
        #[arg(long)]
        fail_health: bool,
    },
}

#[derive(Subcommand)]
enum BundleCommand {
    /// Make a signing key pair: PREFIX.key (secret) and PREFIX.pub (for device keyrings).
    Keygen {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "perch OTA signing key")]
        comment: String,
    },
    /// Build a bundle from images (unsigned unless --key is given).
    Build {
        #[arg(long)]
        compatible: String,
        #[arg(long)]
        version: String,
        /// NAME=PATH, repeated: `rootfs=rootfs.ext4` for slot devices; files (`perch=target/release/perch`) in app mode.
        #[arg(long = "image", required = true)]
        images: Vec<String>,
        #[arg(long, default_value_t = perch::ota::bundle::DEFAULT_CHUNK)]
        chunk_size: u32,
        #[arg(long)]
        key: Option<PathBuf>,
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Add a signature to a bundle, in place.
    Sign {
        #[arg(long)]
        key: PathBuf,
        bundle: PathBuf,
    },
    /// Check a bundle's signature against a keyring and every payload hash.
    Verify {
        /// The trusted public keys (a `*.pub` file or a folder of them), as on the device.
        #[arg(long, conflicts_with = "no_keyring")]
        keyring: Option<PathBuf>,
        /// Check only the payload hashes: the signature is not checked, and the bundle is not trusted.
        #[arg(long)]
        no_keyring: bool,
        bundle: PathBuf,
    },
    /// Print a bundle's manifest and signers.
    Info { bundle: PathBuf },
}

#[derive(Subcommand)]
enum OtaCommand {
    /// Stream a bundle (file, `-` for stdin, or http(s):// URL) into the inactive slot.
    Install {
        #[arg(long, short, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Install a release older than the running one.
        #[arg(long)]
        allow_downgrade: bool,
        /// Write this slot (a or b) instead of the inactive one; the booted slot is always refused.
        #[arg(long)]
        slot: Option<String>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        source: String,
    },
    /// Print the update state, the boot flags and the running release (JSON).
    Status {
        #[arg(long, short, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// At start-up (systemd ExecStartPre): choose the slot where perch is its own bootloader (file, app),
    /// spend a try of a trial release, and record what booted.
    Boot {
        #[arg(long, short, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Commit the release on trial by hand (the health gate does it by itself).
    Commit {
        #[arg(long, short, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Give up the release on trial (or pending) and return to the previous slot.
    Rollback {
        #[arg(long, short, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        #[arg(long, default_value = "rolled back by hand (perch ota rollback)")]
        reason: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `perch ota` logs its state transitions with their reasons (the journal keeps them under systemd).
    let quiet = !matches!(cli.command, Command::Run { .. } | Command::Ota(_) | Command::Fleet(FleetCommand::Serve { .. }));
    perch::logging::init(if quiet { "warn" } else { "info" });
    // SIGPIPE stays ignored in every command (see `perch::util::stdout`); the CLI prints through `outln!`,
    // which ends quietly on a closed pipe.
    let server = matches!(cli.command, Command::Run { .. } | Command::Fleet(FleetCommand::Serve { .. } | FleetCommand::Simulate { .. }));
    if server {
        perch::util::alloc::tune();
    }
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each once: perch's errors name their cause in their own message (logs and MQTT
/// states print only that) and also keep it as `source()`, so a cause already in the text is not repeated.
fn chain(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text = format!("{text}: {c}");
        }
    }
    text
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config, print_detections } => {
            let config = Config::load(&config)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            let result = runtime.block_on(app::run::run(config, app::run::RunOptions { print_detections }));
            // A capture thread stuck inside GStreamer (a hung driver or file system) must not hold the exit.
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            result?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Detect { model, config, fps, min_score, providers, files } => {
            if !(fps > 0.0 && fps <= 120.0) {
                anyhow::bail!("--fps {fps} is out of range: use a rate above 0 and at most 120");
            }
            let config = load_optional_config(config.as_deref())?;
            let mut detector = detector_config(model.as_deref(), config.as_ref());
            if let Some(list) = providers {
                detector.providers = parse_providers(&list)?;
            }
            let engine_cache = config.as_ref().map(Config::engine_cache_dir).unwrap_or_else(|| std::env::temp_dir().join("perch-engine-cache"));
            let opts = app::detect::DetectOptions { detector, engine_cache, fps, min_score };
            match app::detect::run(&files, &opts, &mut std::io::stdout().lock()) {
                // The reader closed the pipe (`perch detect … | head`): it has what it wanted.
                Err(e) if e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)) => {
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Err(e),
                Ok(_) => Ok(ExitCode::SUCCESS),
            }
        }
        Command::Track { file, format, config, camera, min_score, fps, size, events } => {
            let opts = track_options(config.as_deref(), camera.as_deref(), min_score, format, fps, &size, events)?;
            let summary = match &file {
                Some(f) => {
                    let input = std::fs::File::open(f).with_context(|| format!("cannot open {}", f.display()))?;
                    app::track::run(std::io::BufReader::new(input), &opts, &mut std::io::stdout().lock())
                }
                None => app::track::run(std::io::stdin().lock(), &opts, &mut std::io::stdout().lock()),
            };
            match summary {
                Err(e) if e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)) => {
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Err(e),
                Ok(s) => {
                    eprintln!("{} frames, {} detections: {} objects became events, {} events", s.frames, s.detections, s.confirmed, s.events);
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Status { config, json } => {
            let status = app::status::fetch(&config)?;
            if json {
                perch::outln!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                perch::out!("{}", app::status::table(&status));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file } => {
            let config = Config::load(&file)?;
            let manifest = ModelManifest::load(&config.detector.model).with_context(|| format!("{}: `detector.model`", file.display()))?;
            let problems = app::model::check_labels(&config, &manifest);
            if !problems.is_empty() {
                for p in &problems {
                    eprintln!("{}: `{}`: {}", file.display(), p.key, p.message);
                }
                return Ok(ExitCode::FAILURE);
            }
            perch::outln!("{}: ok ({} camera(s), model {})", file.display(), config.cameras.len(), manifest.name);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { model, image, iterations, warmup, threads, min_score, square } => {
            let mut detector = detector_config(model.as_deref(), None);
            detector.intra_threads = threads;
            detector.rectangular = !square;
            let report = app::bench::run(&image, &detector, &std::env::temp_dir().join("perch-engine-cache"), iterations.max(1), warmup, min_score)?;
            perch::outln!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchRecord { input, short, streams, rounds, segment_s, no_ffmpeg, side, out } => {
            let segment = std::time::Duration::from_secs_f64(segment_s);
            if let (Some(_), Some(out)) = (side, out) {
                let o = app::bench_record::perch_side(&input, streams.max(1), segment, &out)?;
                perch::outln!("{}", serde_json::to_string(&o)?);
                return Ok(ExitCode::SUCCESS);
            }
            let short = short.expect("clap requires --short");
            let report = app::bench_record::run(&input, &short, streams.max(1), rounds.max(1), segment, !no_ffmpeg)?;
            perch::outln!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bundle(cmd) => {
            match cmd {
                BundleCommand::Keygen { out, comment } => {
                    let (secret, public) = perch::ota::bundle::keygen(&out, &comment)?;
                    perch::outln!("secret key: {} (keep it off devices)\npublic key: {} (put it in device keyrings)", secret.display(), public.display());
                }
                BundleCommand::Build { compatible, version, images, chunk_size, key, out } => {
                    app::ota::build(&out, &compatible, &version, chunk_size, &images, key.as_deref())?
                }
                BundleCommand::Sign { key, bundle } => {
                    perch::ota::bundle::sign(&bundle, &perch::ota::bundle::load_signing_key(&key)?)?;
                    perch::outln!("{}: signed", bundle.display());
                }
                BundleCommand::Verify { keyring, no_keyring, bundle } => {
                    if keyring.is_none() && !no_keyring {
                        anyhow::bail!(
                            "give --keyring FILE|DIR (the public keys the device trusts) to check the signature, or --no-keyring to check only the payload hashes"
                        );
                    }
                    app::ota::verify(&bundle, keyring.as_deref())?
                }
                BundleCommand::Info { bundle } => app::ota::info(&bundle)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ota(cmd) => {
            match cmd {
                OtaCommand::Install { config, allow_downgrade, slot, quiet, source } => {
                    app::ota::install(&config, &source, allow_downgrade, slot.as_deref(), !quiet)?
                }
                OtaCommand::Status { config } => app::ota::status(&config)?,
                OtaCommand::Boot { config } => app::ota::boot(&config)?,
                OtaCommand::Commit { config } => app::ota::commit(&config)?,
                OtaCommand::Rollback { config, reason } => app::ota::rollback(&config, &reason)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Fleet(cmd) => fleet(cmd),
        Command::Model(ModelCommand::Shadow {
            current,
            candidate,
            fps,
            min_score,
            rounds,
            max_disagreement,
            max_latency_increase,
            max_error_rate,
            mqtt,
            topic,
            files,
        }) => {
            let opts = app::shadow::ShadowOptions {
                current: detector_config(Some(&current), None),
                candidate: detector_config(Some(&candidate), None),
                engine_cache: std::env::temp_dir().join("perch-engine-cache"),
                fps,
                min_score,
                rounds,
                criteria: perch::detect::shadow::ShadowCriteria { max_disagreement, max_latency_increase, max_error_rate, ..Default::default() },
            };
            let (verdict, _) = app::shadow::run(&files, &opts)?;
            perch::outln!("{}", serde_json::to_string_pretty(&verdict)?);
            if let Some(broker) = mqtt {
                let mut report = serde_json::to_value(&verdict)?;
                report["current"] = current.display().to_string().into();
                report["candidate"] = candidate.display().to_string().into();
                report["ts"] = perch::events::schema::rfc3339(std::time::SystemTime::now()).into();
                app::shadow::publish(&broker, &topic, &report)?;
            }
            Ok(if verdict.promote { ExitCode::SUCCESS } else { ExitCode::from(3) })
        }
    }
}

fn fleet(cmd: FleetCommand) -> anyhow::Result<ExitCode> {
    use perch::fleet::operator::{rollout, serve, sim};
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    match cmd {
        FleetCommand::Status { broker, prefix, json } => runtime.block_on(rollout::status(&broker, &prefix, json))?,
        FleetCommand::Rollout { broker, state, bundle, devices, waves, max_failures, wave_timeout, prefix, model, resume, abort } => {
            let status = runtime.block_on(async {
                if abort {
                    rollout::abort(&broker, &state).await
                } else if resume {
                    rollout::resume(&broker, &state).await
                } else {
                    let o = rollout::StartOptions {
                        bundle_url: bundle.unwrap_or_default(),
                        devices: devices.unwrap_or_default(),
                        waves: rollout::parse_waves(&waves)?,
                        max_failures_pct: rollout::parse_pct(&max_failures)?,
                        wave_timeout,
                        prefix,
                        kind: if model { rollout::Kind::Model } else { rollout::Kind::Firmware },
                    };
                    rollout::start(&broker, &state, o).await
                }
            })?;
            // A paused rollout needs a decision: exit 2 so scripts notice.
            return Ok(if status == rollout::RolloutStatus::Paused { ExitCode::from(2) } else { ExitCode::SUCCESS });
        }
        FleetCommand::Serve { dir, listen } => serve::run(&dir, &listen)?,
        FleetCommand::Simulate { devices, state_dir, broker, keyring, compatible, id_prefix, prefix, fail_health } => {
            let opts = sim::SimOptions { devices, state_dir, broker, keyring, compatible, id_prefix, topic_prefix: prefix, fail_health };
            runtime.block_on(sim::run(opts))?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The config given with `--config`, or the default one when it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TrackFormat {
    /// `perch run --print-detections` or `perch detect` JSON lines.
    Json,
    /// MOTChallenge det.txt rows.
    Mot,
}

/// `perch track`'s settings: a camera's tracker from a config, or the defaults.
fn track_options(
    config: Option<&std::path::Path>,
    camera: Option<&str>,
    min_score: Option<f32>,
    format: TrackFormat,
    fps: f64,
    size: &str,
    events: bool,
) -> anyhow::Result<app::track::TrackOptions> {
    if !(fps > 0.0 && fps <= 1000.0) {
        anyhow::bail!("--fps {fps} is out of range: use a rate above 0 and at most 1000");
    }
    let parsed = size.split_once('x').and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)));
    let Some(size) = parsed.filter(|&(w, h)| w > 0 && h > 0) else {
        anyhow::bail!("--size {size:?} is not WIDTHxHEIGHT: give the picture size in pixels, e.g. 1920x1080");
    };
    let (tracker, camera_score) = match config {
        Some(path) => {
            let c = Config::load(path)?;
            let cam = match camera {
                Some(id) => c.cameras.iter().find(|cam| cam.id == id).with_context(|| format!("{} has no camera {id:?}", path.display()))?,
                None => c.cameras.first().with_context(|| format!("{} has no camera", path.display()))?,
            };
            (cam.track.clone(), cam.min_score)
        }
        None if camera.is_some() => anyhow::bail!("--camera needs --config: the camera's settings come from a config file"),
        None => (perch::track::TrackerConfig::default(), 0.5),
    };
    let min_score = min_score.unwrap_or(camera_score);
    if !(0.0..=1.0).contains(&min_score) {
        anyhow::bail!("--min-score {min_score} is out of range: use a score between 0 and 1");
    }
    let format = match format {
        TrackFormat::Json => app::track::Format::Json,
        TrackFormat::Mot => app::track::Format::Mot,
    };
    Ok(app::track::TrackOptions { tracker, min_score, format, fps, size, events })
}

fn load_optional_config(path: Option<&std::path::Path>) -> anyhow::Result<Option<Config>> {
    match path {
        Some(p) => Ok(Some(Config::load(p)?)),
        None if std::path::Path::new(DEFAULT_CONFIG_PATH).exists() => Ok(Some(Config::load(std::path::Path::new(DEFAULT_CONFIG_PATH))?)),
        None => Ok(None),
    }
}

fn detector_config(model: Option<&std::path::Path>, config: Option<&Config>) -> DetectorConfig {
    let mut d = config.map(|c| c.detector.clone()).unwrap_or_default();
    d.model = app::model::resolve(model, config);
    d
}

fn parse_providers(list: &[String]) -> anyhow::Result<Vec<Provider>> {
    list.iter()
        .map(|p| match p.trim().to_ascii_lowercase().as_str() {
            "tensorrt" | "trt" => Ok(Provider::Tensorrt),
            "cuda" => Ok(Provider::Cuda),
            "cpu" => Ok(Provider::Cpu),
            other => anyhow::bail!("unknown provider {other:?}: use tensorrt, cuda or cpu"),
        })
        .collect()
}
