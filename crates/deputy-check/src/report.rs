//! The battery's results: one row per check, as a table or JSON.

use deputy_testkit::wire::visible;
use serde_json::{Value, json};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The agent did what PROTOCOL.md says.
    Pass,
    /// It did not (the evidence says what happened instead).
    Fail,
    /// The check could not run against this agent (the evidence says why);
    /// not a failure.
    Skip,
}

impl Outcome {
    /// `pass`, `FAIL` or `skip`, as the table shows it.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "skip",
        }
    }

    fn json(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Skip => "skip",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// A short stable name, e.g. `parse-error`.
    pub id: &'static str,
    /// Where PROTOCOL.md says it, e.g. `§1, §4`.
    pub section: &'static str,
    /// What it checks, in a sentence.
    pub what: &'static str,
    /// How it came out.
    pub outcome: Outcome,
    /// What was seen: measurements for a pass, what happened instead for a
    /// failure, the reason for a skip. One line.
    pub evidence: String,
    /// More for a failure: the last lines of the conversation and of the
    /// agent's stderr (shown by `--verbose` and in `--json`).
    pub detail: Option<String>,
    /// How long the check took.
    pub millis: u64,
}

/// The results of a whole battery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `deputy` or `acp`.
    pub protocol: &'static str,
    /// The command that was checked.
    pub command: Vec<String>,
    /// The results, in the order the checks ran.
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// True when no check failed (skipped checks do not fail a battery).
    pub fn passed(&self) -> bool {
        !self.checks.iter().any(|c| c.outcome == Outcome::Fail)
    }

    /// The result of one check, by id.
    pub fn get(&self, id: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// The ids of the checks that came out so.
    pub fn ids(&self, outcome: Outcome) -> Vec<&'static str> {
        self.checks.iter().filter(|c| c.outcome == outcome).map(|c| c.id).collect()
    }

    fn count(&self, outcome: Outcome) -> usize {
        self.checks.iter().filter(|c| c.outcome == outcome).count()
    }

    /// A plain-text table (check, PROTOCOL.md section, result, evidence) and
    /// a summary line; with `verbose`, each failure's detail under its row.
    pub fn table(&self, verbose: bool) -> String {
        let idw = self.checks.iter().map(|c| c.id.len()).max().unwrap_or(5).max(5);
        let secw = self.checks.iter().map(|c| c.section.chars().count()).max().unwrap_or(7).max(7);
        let mut out = format!(
            "deputy check --protocol {}: {}\n\n",
            self.protocol,
            visible(&shell_words(&self.command))
        );
        out.push_str(&format!("{:<idw$}  {:<secw$}  {:<6}  EVIDENCE\n", "CHECK", "SECTION", "RESULT"));
        for c in &self.checks {
            let pad = secw - c.section.chars().count();
            out.push_str(&format!(
                "{:<idw$}  {}{}  {:<6}  {}\n",
                c.id,
                c.section,
                " ".repeat(pad),
                c.outcome.label(),
                visible(&c.evidence)
            ));
            if verbose && let Some(detail) = &c.detail {
                for line in detail.lines() {
                    out.push_str(&format!("{:idw$}      | {}\n", "", visible(line)));
                }
            }
        }
        out.push_str(&format!(
            "\n{} checks: {} passed, {} failed, {} skipped\n",
            self.checks.len(),
            self.count(Outcome::Pass),
            self.count(Outcome::Fail),
            self.count(Outcome::Skip)
        ));
        out
    }

    /// The report as one JSON object: `protocol`, `command`, `passed`,
    /// `summary {pass, fail, skip}` and `checks [{id, section, what,
    /// outcome, evidence, detail, millis}]`.
    pub fn to_json(&self) -> Value {
        json!({
            "protocol": self.protocol,
            "command": self.command,
            "passed": self.passed(),
            "summary": {
                "pass": self.count(Outcome::Pass),
                "fail": self.count(Outcome::Fail),
                "skip": self.count(Outcome::Skip),
            },
            "checks": self.checks.iter().map(|c| json!({
                "id": c.id,
                "section": c.section,
                "what": c.what,
                "outcome": c.outcome.json(),
                "evidence": c.evidence,
                "detail": c.detail,
                "millis": c.millis,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The command as a shell would show it (quoted where needed).
fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b)) {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &'static str, outcome: Outcome) -> CheckResult {
        CheckResult {
            id,
            section: "§1",
            what: "x",
            outcome,
            evidence: format!("{id} evidence"),
            detail: Some("line one\nline two".into()),
            millis: 3,
        }
    }

    #[test]
    fn a_skip_does_not_fail_the_battery_a_failure_does() {
        let mut report = Report {
            protocol: "deputy",
            command: vec!["my agent".into(), "--flag".into()],
            checks: vec![row("a", Outcome::Pass), row("b", Outcome::Skip)],
        };
        assert!(report.passed());
        report.checks.push(row("c", Outcome::Fail));
        assert!(!report.passed());
        assert_eq!(report.ids(Outcome::Fail), ["c"]);
        let table = report.table(false);
        assert!(table.starts_with("deputy check --protocol deputy: 'my agent' --flag\n"), "{table}");
        assert!(table.contains("c      §1       FAIL    c evidence\n"), "{table}");
        assert!(table.ends_with("3 checks: 1 passed, 1 failed, 1 skipped\n"), "{table}");
        assert!(!table.contains("line one"));
        assert!(report.table(true).contains("| line two"));
        report.checks[0].evidence = "agent \u{1b}]0;pwned\u{7} says hi".into();
        assert!(report.table(false).contains("agent \\u{1b}]0;pwned\\u{7} says hi"), "controls made visible");
        let json = report.to_json();
        assert_eq!(json["passed"], false);
        assert_eq!(json["summary"]["skip"], 1);
        assert_eq!(json["checks"][2]["outcome"], "fail");
    }
}
