//! The results table: one row per measurement, with its target beside it when there is one.
//! Rows are also printed (to stderr) as they are measured, so a long run shows progress and a
//! crash keeps what was measured before it.

/// Whether a row meets its target.
#[derive(Debug, Clone, Copy)]
pub enum Verdict {
    Met,
    Missed,
    /// Informational row (no target).
    Info,
}

struct Row {
    section: String,
    measure: String,
    result: String,
    target: String,
    verdict: Verdict,
}

#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
}

impl Report {
    /// Adds an informational row.
    pub fn info(&mut self, section: &str, measure: &str, result: String) {
        self.push(section, measure, result, "", Verdict::Info);
    }

    /// Adds a row with a target; `met` says whether the result meets it.
    pub fn target(
        &mut self,
        section: &str,
        measure: &str,
        result: String,
        target: &str,
        met: bool,
    ) {
        let verdict = if met { Verdict::Met } else { Verdict::Missed };
        self.push(section, measure, result, target, verdict);
    }

    fn push(&mut self, section: &str, measure: &str, result: String, target: &str, v: Verdict) {
        eprintln!("[bench] {section} | {measure} | {result} | {target}");
        self.rows.push(Row {
            section: section.into(),
            measure: measure.into(),
            result,
            target: target.into(),
            verdict: v,
        });
    }

    /// The markdown table.
    pub fn markdown(&self) -> String {
        let mut out =
            String::from("| section | measure | result | target | |\n|---|---|---|---|---|\n");
        for r in &self.rows {
            let v = match r.verdict {
                Verdict::Met => "met",
                Verdict::Missed => "**missed**",
                Verdict::Info => "",
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                r.section, r.measure, r.result, r.target, v
            ));
        }
        out
    }
}

/// µs as a short human number (µs below 10 ms, else ms).
pub fn us(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.abs() < 10_000.0 {
        format!("{v:.0} µs")
    } else {
        format!("{:.1} ms", v / 1000.0)
    }
}
