//! CI runs the benchmarks only as a smoke test: every scenario works and
//! reports well-formed figures. How fast is for `deputy-bench all`, not CI.

use std::path::PathBuf;
use std::process::Command;

fn deputy_bin() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_deputy-bench"));
    let deputy = bench.with_file_name("deputy");
    assert!(
        deputy.is_file(),
        "{} is missing: the smoke test needs the workspace's `deputy` binary (run `cargo test --workspace`)",
        deputy.display()
    );
    deputy
}

#[test]
fn every_scenario_runs_and_reports_json_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_deputy-bench"))
        .args(["all", "--quick", "--json"])
        .env("DEPUTY_BIN", deputy_bin())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let figures: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
    for scenario in ["throughput", "approvals", "spawn", "cancel", "fanout", "soak", "sandbox"] {
        assert!(figures.iter().any(|f| f["scenario"] == scenario), "no figure for {scenario}: {stdout}");
    }
    for f in &figures {
        for key in ["scenario", "metric", "value", "unit", "floor", "ratio", "runs"] {
            assert!(f.get(key).is_some(), "{key} missing in {f}");
        }
        assert!(f["value"].is_number(), "{f}");
        if let (Some(value), Some(floor), Some(ratio)) =
            (f["value"].as_f64(), f["floor"].as_f64(), f["ratio"].as_f64())
        {
            assert!(
                (ratio - value / floor).abs() <= 1e-9 * ratio.abs().max(1.0),
                "ratio is not value/floor: {f}"
            );
        }
    }
    // Correctness targets hold even in a smoke run: nothing leaks, nothing fails.
    for (scenario, metric) in [
        ("cancel", "stubborn: grandchildren left alive"),
        ("fanout", "failures"),
        ("soak", "leaked processes"),
        ("soak", "open descriptors growth"),
    ] {
        let f = figures.iter().find(|f| f["scenario"] == scenario && f["metric"] == metric).unwrap();
        // Zero, or for descriptors fewer after than before (one still closing at the start).
        assert!(f["value"].as_f64().is_some_and(|v| v <= 0.0), "{f}");
    }
}

#[test]
fn an_unknown_scenario_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_deputy-bench")).arg("nope").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_scaling_sweeps_run_and_write_one_plot_each() {
    let plots = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_deputy-bench"))
        .args(["scaling", "--quick", "--json", "--plots"])
        .arg(plots.path())
        .env("DEPUTY_BIN", deputy_bin())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let figures: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
    for sweep in ["event_size", "approvals_in_flight", "conversations", "resume", "model_calls"] {
        let points: Vec<_> = figures
            .iter()
            .filter(|f| f["metric"].as_str().is_some_and(|m| m.starts_with(&format!("{sweep} at "))))
            .collect();
        assert_eq!(points.len(), 2, "two points for {sweep}: {stdout}");
        for p in points {
            // Finite and not negative (host RSS per conversation may round to 0).
            assert!(p["value"].as_f64().is_some_and(|v| v.is_finite() && v >= 0.0), "{p}");
            assert!(p["detail"].as_object().is_some_and(|d| d.len() >= 4), "{p}");
        }
        let svg = plots.path().join(format!("scaling-{}.svg", sweep.replace('_', "-")));
        let svg = std::fs::read_to_string(&svg).unwrap_or_else(|e| panic!("{}: {e}", svg.display()));
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{sweep}");
    }
}

#[test]
fn scaling_refuses_a_plots_folder_it_cannot_create() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_deputy-bench"))
        .args(["scaling", "--quick", "--plots"])
        .arg(file.path().join("sub"))
        .env("DEPUTY_BIN", deputy_bin())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("deputy-bench:"), "{stderr}");
}
