//! Progress bars for long work, drawn on stderr only when it is a terminal.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tessera_ingest::{FileReport, ImportProgress, InputFile};

/// Draws one bar per imported file.
pub struct ImportBars {
    enabled: bool,
    state: Mutex<BarState>,
}

#[derive(Default)]
struct BarState {
    bar: Option<ProgressBar>,
    total_files: usize,
    done_files: usize,
}

impl ImportBars {
    pub fn new(quiet: bool) -> Self {
        ImportBars {
            enabled: !quiet && std::io::stderr().is_terminal(),
            state: Mutex::new(BarState::default()),
        }
    }

    fn with_state(&self, f: impl FnOnce(&mut BarState)) {
        if let Ok(mut state) = self.state.lock() {
            f(&mut state);
        }
    }
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix} {wide_msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

impl ImportProgress for ImportBars {
    fn files(&self, files: &[InputFile]) {
        self.with_state(|s| s.total_files = files.len());
    }

    fn start_file(&self, file: &InputFile) {
        if !self.enabled {
            return;
        }
        self.with_state(|s| {
            let bar = ProgressBar::with_draw_target(Some(file.size), ProgressDrawTarget::stderr());
            bar.set_style(style());
            bar.set_prefix(format!("[{}/{}]", s.done_files + 1, s.total_files));
            bar.set_message(file.file_name().to_owned());
            s.bar = Some(bar);
        });
    }

    fn bytes(&self, done: u64) {
        self.with_state(|s| {
            if let Some(bar) = &s.bar {
                bar.set_position(done);
            }
        });
    }

    fn finish_file(&self, report: &FileReport) {
        self.with_state(|s| {
            s.done_files += 1;
            if let Some(bar) = s.bar.take() {
                bar.finish_and_clear();
            }
        });
        if self.enabled {
            eprintln!("{}", crate::output::file_line(report));
        }
    }
}

/// A bar counting up to `total` items, or nothing when stderr is not a terminal.
pub fn counter(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {human_pos}/{human_len} {per_sec} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// A spinner naming the current stage of a multi-stage job (stitching), or nothing
/// when stderr is not a terminal.
pub struct Stages {
    bar: ProgressBar,
}

impl Stages {
    pub fn new(quiet: bool) -> Self {
        let bar = if quiet || !std::io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>4} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        };
        Stages { bar }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// Names the stage now running.
    pub fn set(&self, message: &str) {
        self.bar.set_message(message.to_owned());
    }
}

impl tessera_identity::StitchProgress for Stages {
    fn stage(&self, message: &str) {
        self.bar.set_message(message.to_owned());
    }
}
