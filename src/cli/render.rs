//! How the binary shows what the library reports: lines on standard output, warnings on standard
//! error, progress bars on a terminal. A closed standard output (`warmstart predict ... | head
//! -1`) is not an error: the command goes on, writing nothing more there.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use warmstart::progress::{Event, Progress};

/// Set once standard output has been closed by its reader.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `text` and a newline to standard output; nothing once the reader has gone.
pub fn say(text: impl std::fmt::Display) {
    say_raw(&format!("{text}\n"));
}

/// [`say`] without the newline.
pub fn say_raw(text: &str) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
}

fn bar(len: usize, template: &str) -> ProgressBar {
    let b = ProgressBar::new(len as u64);
    b.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b
}

/// The terminal's view of a command: Keras-style epoch lines, and bars over an epoch's batches
/// and a comparison's runs when standard error is a terminal.
pub struct Console {
    bars: bool,
    epoch: Option<ProgressBar>,
    runs: Option<ProgressBar>,
}

impl Console {
    pub fn new() -> Console {
        Console {
            bars: std::io::stderr().is_terminal(),
            epoch: None,
            runs: None,
        }
    }

    fn line(&self, text: &str) {
        match &self.runs {
            Some(b) => b.suspend(|| say(text)),
            None => say(text),
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        for b in [self.epoch.take(), self.runs.take()].into_iter().flatten() {
            b.finish_and_clear();
        }
    }
}

impl Progress for Console {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Info(text) => self.line(&text),
            Event::Warning(text) => {
                let show = || eprintln!("warning: {text}");
                match (&self.epoch, &self.runs) {
                    (Some(b), _) | (None, Some(b)) => b.suspend(show),
                    (None, None) => show(),
                }
            }
            Event::EpochStarted {
                epoch,
                epochs,
                batches,
                done,
            } if self.bars => {
                let b = bar(batches, "{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})");
                b.set_prefix(format!("Epoch {}/{}", epoch + 1, epochs));
                b.set_position(done as u64);
                self.epoch = Some(b);
            }
            Event::BatchTrained { loss, acc } => {
                if let Some(b) = &self.epoch {
                    b.inc(1);
                    b.set_message(format!("loss: {loss:.4} - acc: {acc:.4}"));
                }
            }
            Event::BatchesEnded => {
                if let Some(b) = self.epoch.take() {
                    b.finish_and_clear();
                }
            }
            Event::Epoch { record, epochs } => self.line(&record.keras_line(epochs)),
            Event::RunsStarted { total, what } if self.bars => {
                let style = format!("{what} [{{bar:30}}] {{pos}}/{{len}} runs ({{eta}})");
                self.runs = Some(bar(total, &style));
            }
            Event::RunDone(text) => match &self.runs {
                Some(b) => {
                    b.suspend(|| say(&text));
                    b.inc(1);
                }
                None => say(text),
            },
            Event::EpochStarted { .. } | Event::RunsStarted { .. } => {}
        }
    }
}
