//! Progress bars for long work, drawn on stderr only when it is a terminal.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tessera_ingest::{FileReport, ImportProgress, InputFile};

/// Draws one bar per imported file.
pub struct ImportBars {
    bar: Mutex<Option<ProgressBar>>,
    enabled: bool,
    total_files: Mutex<usize>,
    done_files: Mutex<usize>,
}

impl ImportBars {
    pub fn new(quiet: bool) -> Self {
        ImportBars {
            bar: Mutex::new(None),
            enabled: !quiet && std::io::stderr().is_terminal(),
            total_files: Mutex::new(0),
            done_files: Mutex::new(0),
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
        if let Ok(mut n) = self.total_files.lock() {
            *n = files.len();
        }
    }

    fn start_file(&self, file: &InputFile) {
        if !self.enabled {
            return;
        }
        let done = self.done_files.lock().map(|n| *n).unwrap_or(0);
        let total = self.total_files.lock().map(|n| *n).unwrap_or(0);
        let bar = ProgressBar::with_draw_target(Some(file.size), ProgressDrawTarget::stderr());
        bar.set_style(style());
        bar.set_prefix(format!("[{}/{}]", done + 1, total));
        bar.set_message(file.file_name().to_owned());
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }

    fn bytes(&self, done: u64) {
        if let Ok(slot) = self.bar.lock()
            && let Some(bar) = slot.as_ref()
        {
            bar.set_position(done);
        }
    }

    fn finish_file(&self, report: &FileReport) {
        if let Ok(mut n) = self.done_files.lock() {
            *n += 1;
        }
        if let Ok(mut slot) = self.bar.lock()
            && let Some(bar) = slot.take()
        {
            bar.finish_and_clear();
        }
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
