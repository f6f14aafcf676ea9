//! report.json of a comparison: every round's full result per target, medians, min/max spread
//! and ratios against the baseline, plus the title and metadata.

use crate::compare::Comparison;

/// Render the comparison as pretty JSON.
pub fn render(cmp: &Comparison) -> String {
    let mut s = serde_json::to_string_pretty(cmp).expect("comparison serialises");
    s.push('\n');
    s
}
