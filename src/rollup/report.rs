//! What a rollup did to each window's document, and the summary of a run.

use crate::window::Window;

use crate::metrics_document::FieldDiff;

/// What happened (or would happen) to one window's document.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// There was no document with metrics for this window.
    Created,
    Unchanged,
    Changed(Vec<FieldDiff>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct WindowReport {
    pub window: Window,
    pub outcome: Outcome,
}

/// Counts for the end-of-run summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub windows: usize,
    pub created: usize,
    pub changed: usize,
    pub unchanged: usize,
}

impl Summary {
    pub fn of(reports: &[WindowReport]) -> Summary {
        let mut s = Summary {
            windows: reports.len(),
            ..Summary::default()
        };
        for r in reports {
            match r.outcome {
                Outcome::Created => s.created += 1,
                Outcome::Unchanged => s.unchanged += 1,
                Outcome::Changed(_) => s.changed += 1,
            }
        }
        s
    }
}
