//! The `loadgen` binary: flags → one run or a comparison → reports → exit code.

mod cli;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use cli::{Cli, Cmd};
use loadgen::report;
use loadgen::run::{self, RunOptions};

/// Exit status of a run whose `--threshold` checks failed (k6's).
const THRESHOLDS_FAILED: u8 = 99;

/// How a run that completed ended.
enum Verdict {
    /// Everything held.
    Pass,
    /// A `--threshold` failed (reports were written).
    ThresholdsFailed,
}

fn main() -> ExitCode {
    let args = Cli::parse();
    match real_main(args) {
        Ok(Verdict::Pass) => ExitCode::SUCCESS,
        Ok(Verdict::ThresholdsFailed) => {
            eprintln!("loadgen: thresholds failed");
            ExitCode::from(THRESHOLDS_FAILED)
        }
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(args: Cli) -> Result<Verdict> {
    match args.cmd {
        Some(Cmd::Compare(c)) => {
            let cc = cli::build_compare(&c)?;
            let cmp = loadgen::compare::run(&cc)?;
            print!("{}", report::md::render(&cmp));
            eprintln!("reports written to {}", cc.out.display());
            Ok(
                if cmp
                    .targets
                    .iter()
                    .any(|t| t.runs.iter().any(|r| r.thresholds_failed()))
                {
                    Verdict::ThresholdsFailed
                } else {
                    Verdict::Pass
                },
            )
        }
        Some(Cmd::Merge(m)) => {
            let thresholds = m
                .thresholds
                .iter()
                .map(|t| loadgen::threshold::Threshold::parse(t))
                .collect::<Result<Vec<_>, _>>()?;
            let mut result = loadgen::merge::merge_paths(&m.paths)?;
            result.thresholds = loadgen::threshold::check_all(&thresholds, &result);
            print!("{}", report::text::summary(&result));
            write_outputs(&result, m.json.as_deref(), m.hgrm.as_deref())?;
            Ok(if result.thresholds_failed() {
                Verdict::ThresholdsFailed
            } else {
                Verdict::Pass
            })
        }
        None => {
            let r = &args.run;
            let cfg = cli::build_config(&r.load, r.url.as_deref(), r.server_pid)?;
            let opts = RunOptions {
                progress: !r.load.quiet,
                label: String::new(),
            };
            let result = run::run(&cfg, &opts)?;
            print!("{}", report::text::summary(&result));
            write_outputs(&result, r.json.as_deref(), r.hgrm.as_deref())?;
            if result.interrupted {
                anyhow::bail!("interrupted");
            }
            Ok(if result.thresholds_failed() {
                Verdict::ThresholdsFailed
            } else {
                Verdict::Pass
            })
        }
    }
}

/// Write `--json` and `--hgrm` of a result.
fn write_outputs(
    result: &loadgen::result::RunResult,
    json: Option<&std::path::Path>,
    hgrm: Option<&std::path::Path>,
) -> Result<()> {
    if let Some(path) = json {
        std::fs::write(path, result.to_json() + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = hgrm {
        std::fs::write(path, loadgen::hist::hgrm(&result.hists.latency))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
