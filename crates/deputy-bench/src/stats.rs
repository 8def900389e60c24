//! Summaries of repeated measurements, and the one output line per figure.

use std::time::Duration;

use serde::Serialize;

/// Order statistics of a set of samples (in any unit).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub min: f64,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// Nearest-rank percentiles; `samples` must not be empty.
    pub fn of(samples: &[f64]) -> Summary {
        assert!(!samples.is_empty(), "no samples");
        let mut sorted = samples.to_vec();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let rank = |p: f64| {
            let index = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[index.clamp(1, sorted.len()) - 1]
        };
        Summary {
            min: sorted[0],
            median: rank(50.0),
            p99: rank(99.0),
            max: sorted[sorted.len() - 1],
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
        }
    }

    pub fn of_durations_ms(samples: &[Duration]) -> Summary {
        Summary::of(&samples.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>())
    }
}

/// One reported figure: `ratio` is always `value / floor` (for rates higher is
/// better, for times lower is better).
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub scenario: &'static str,
    pub metric: String,
    pub value: f64,
    pub unit: &'static str,
    pub floor: Option<f64>,
    pub ratio: Option<f64>,
    pub runs: usize,
    /// The target this figure is held to, in words (e.g. "ratio >= 0.5").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Whether the target was met, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// The machine's load average when the figure was taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<String>,
}

impl Figure {
    pub fn new(scenario: &'static str, metric: impl Into<String>, value: f64, unit: &'static str) -> Figure {
        Figure {
            scenario,
            metric: metric.into(),
            value,
            unit,
            floor: None,
            ratio: None,
            runs: 1,
            target: None,
            met: None,
            detail: None,
            load: None,
        }
    }

    pub fn floor(mut self, floor: f64) -> Figure {
        self.floor = Some(floor);
        self.ratio = Some(if floor == 0.0 { f64::INFINITY } else { self.value / floor });
        self
    }

    pub fn runs(mut self, runs: usize) -> Figure {
        self.runs = runs;
        self
    }

    pub fn target(mut self, description: impl Into<String>, met: bool) -> Figure {
        self.target = Some(description.into());
        self.met = Some(met);
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Figure {
        self.detail = Some(detail);
        self
    }

    /// A line for people: `scenario  metric  value unit  (floor …, ratio …)  [target: ok]`.
    pub fn human(&self) -> String {
        let mut line =
            format!("{:<11} {:<34} {:>14} {}", self.scenario, self.metric, fmt_num(self.value), self.unit);
        if let (Some(floor), Some(ratio)) = (self.floor, self.ratio) {
            line.push_str(&format!("  (floor {} {}, ratio {:.3})", fmt_num(floor), self.unit, ratio));
        }
        if let (Some(target), Some(met)) = (&self.target, self.met) {
            line.push_str(&format!("  [{target}: {}]", if met { "met" } else { "MISSED" }));
        }
        line
    }
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&samples);
        assert_eq!((s.min, s.median, s.p99, s.max), (1.0, 50.0, 99.0, 100.0));
        let one = Summary::of(&[7.0]);
        assert_eq!((one.median, one.p99), (7.0, 7.0));
    }

    #[test]
    fn ratio_is_value_over_floor() {
        let f = Figure::new("x", "rate", 50.0, "events/s").floor(100.0);
        assert_eq!(f.ratio, Some(0.5));
    }
}
