//! Timing the stages of a long run (training, stitching) for its report.

use std::time::Instant;

/// The stages of a run with their seconds, in order.
#[derive(Debug, Default)]
pub struct Stages {
    current: Option<(String, Instant)>,
    done: Vec<(String, f64)>,
}

impl Stages {
    /// Ends the current stage, if any, and starts `name`.
    pub fn start(&mut self, name: &str) {
        self.stop();
        self.current = Some((name.to_owned(), Instant::now()));
    }

    /// Ends the current stage.
    pub fn stop(&mut self) {
        if let Some((name, at)) = self.current.take() {
            self.done.push((name, at.elapsed().as_secs_f64()));
        }
    }

    /// Every stage with its seconds.
    pub fn finish(mut self) -> Vec<(String, f64)> {
        self.stop();
        self.done
    }
}
