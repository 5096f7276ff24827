//! One shape's figures, as printed.

use super::*;

/// One shape's figures over every round.
#[derive(Clone, Debug)]
pub struct ShapeReport {
    pub shape: Shape,
    pub processor: Vec<Measured>,
    pub sdk: Vec<Measured>,
    pub raw: Vec<Measured>,
}

pub(super) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

impl ShapeReport {
    fn median_of(runs: &[Measured], figure: fn(&Measured) -> f64) -> f64 {
        median(&mut runs.iter().map(figure).collect::<Vec<_>>())
    }
}

impl std::fmt::Display for ShapeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shape = self.shape;
        writeln!(
            f,
            "{} records over {} ids ({} rounds; medians):",
            shape.records,
            shape.ids(),
            self.processor.len()
        )?;
        let raw_rate = Self::median_of(&self.raw, Measured::writes_per_second);
        for (name, runs) in [
            ("processor", &self.processor),
            ("sdk adapter", &self.sdk),
            ("raw client", &self.raw),
        ] {
            let rate = Self::median_of(runs, Measured::writes_per_second);
            writeln!(
                f,
                "  {name:<12} {rate:>8.0} writes/s  {:>6.3} ms CPU/write  {:>5.0} % of raw  [writes/s per round: {}]",
                Self::median_of(runs, Measured::cpu_ms_per_write),
                100.0 * rate / raw_rate,
                runs.iter()
                    .map(|m| format!("{:.0}", m.writes_per_second()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
        Ok(())
    }
}
