//! The recent log lines of this process, for `get_logs()` / `zask logs`: a `log::Log` that
//! wraps the console logger the binaries install (`cli::init_logging`) and also keeps the
//! last `LOG_LINES_MAX` lines it printed in a ring, formatted as on the console (time, level,
//! target, message).
//!
//! Only the binaries install it. A process that embeds Zask as a library (a `LocalCluster`,
//! a test) and does not call `install` keeps no lines: `recent_lines` is then empty and
//! `installed` says so.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// How many lines the ring keeps: older ones are dropped as new ones come.
pub const LOG_LINES_MAX: usize = 1_000;

/// The recent lines, oldest first, shared between the logger and whoever reads them.
pub type LogLines = Arc<Mutex<VecDeque<String>>>;

/// The ring of the logger installed in this process, if one is.
static RING: OnceLock<LogLines> = OnceLock::new();

/// A logger that prints through `inner` and keeps what it printed in `lines`.
pub struct RingLogger {
    inner: env_logger::Logger,
    lines: LogLines,
    max: usize,
}

impl RingLogger {
    /// Wraps `inner`, keeping at most `max` lines.
    pub fn new(inner: env_logger::Logger, max: usize) -> RingLogger {
        RingLogger {
            inner,
            lines: Arc::new(Mutex::new(VecDeque::with_capacity(max.min(LOG_LINES_MAX)))),
            max,
        }
    }

    /// The ring this logger fills.
    pub fn lines(&self) -> LogLines {
        self.lines.clone()
    }
}

impl log::Log for RingLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if !self.inner.matches(record) {
            return;
        }
        self.inner.log(record);
        if self.max == 0 {
            return;
        }
        let line = format_line(SystemTime::now(), record);
        // A panic elsewhere while holding the lock leaves the lines usable.
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        while lines.len() >= self.max {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

/// Installs `inner` wrapped in a `RingLogger` of `LOG_LINES_MAX` lines as this process's
/// logger. Fails (changing nothing) when a logger is installed already.
pub fn install(inner: env_logger::Logger) -> Result<(), log::SetLoggerError> {
    let level = inner.filter();
    let logger = RingLogger::new(inner, LOG_LINES_MAX);
    let lines = logger.lines();
    log::set_boxed_logger(Box::new(logger))?;
    log::set_max_level(level);
    let _ = RING.set(lines);
    Ok(())
}

/// Whether this process installed the ring (`install`): without it there are no lines.
pub fn installed() -> bool {
    RING.get().is_some()
}

/// This process's recent log lines, oldest first; empty when it installed no ring.
pub fn recent_lines() -> Vec<String> {
    match RING.get() {
        Some(ring) => ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect(),
        None => Vec::new(),
    }
}

/// One line as the console shows it: `[2026-01-02T03:04:05.678Z INFO  target] message`.
pub fn format_line(at: SystemTime, record: &log::Record) -> String {
    format!(
        "[{} {:<5} {}] {}",
        utc_millis(at),
        record.level(),
        record.target(),
        record.args()
    )
}

/// `at` as RFC 3339 in UTC with milliseconds (as env_logger's `format_timestamp_millis`).
fn utc_millis(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Log;
    use std::time::Duration;

    #[test]
    fn time_is_formatted_as_the_console_does() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(utc_millis(at), "2023-11-14T22:13:20.123Z");
        assert_eq!(utc_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(utc_millis(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn the_ring_keeps_the_newest_lines_it_lets_through() {
        let inner = env_logger::Builder::new()
            .filter_level(log::LevelFilter::Info)
            .is_test(true)
            .build();
        let logger = RingLogger::new(inner, 3);
        for i in 0..5 {
            logger.log(
                &log::Record::builder()
                    .level(log::Level::Info)
                    .target("zask::test")
                    .args(format_args!("line {i}"))
                    .build(),
            );
        }
        logger.log(
            &log::Record::builder()
                .level(log::Level::Debug)
                .target("zask::test")
                .args(format_args!("filtered out"))
                .build(),
        );
        let lines: Vec<String> = logger.lines().lock().unwrap().iter().cloned().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].ends_with(" INFO  zask::test] line 2"), "{lines:?}");
        assert!(lines[2].ends_with("] line 4"), "{lines:?}");
    }
}
