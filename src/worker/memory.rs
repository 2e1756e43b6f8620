//! `--memory-limit`: the spellings a worker's memory limit accepts, parsed into a typed
//! `MemoryLimitSpec` (pure), the machine's memory (`/proc/meminfo`) that a fraction and
//! `auto` are taken of, and a process's resident memory (`/proc/PID/statm`), which the nanny
//! watches. What the worker does with the limit is the worker core's
//! (`worker/core/memory.rs`).
//!
//! Accepted forms (units are case-insensitive, a space before the unit is allowed):
//! - a plain integer: bytes (`300000000`); `0` means no limit;
//! - a number with a unit: `B`; decimal `K`/`KB`, `M`/`MB`, `G`/`GB`, `T`/`TB` (10^3, 10^6,
//!   10^9, 10^12: a single letter is decimal, as in dask); binary `KiB`, `MiB`, `GiB`, `TiB`
//!   (2^10, 2^20, 2^30, 2^40). The number may have a fraction (`1.5GB`).
//! - a number with a decimal point and no unit, `0 < f <= 1`: that fraction of the machine's
//!   memory (`0.25`; `1.0` is all of it, while `1` is one byte);
//! - `auto`: the machine's memory divided by the workers this process runs, which for a
//!   `zask-worker` is one: all of it. Give each of several workers on one machine a fraction.

use std::fmt;

/// A memory limit as written, before the machine's memory is known.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MemoryLimitSpec {
    /// `0`: no limit.
    None,
    /// A number of bytes.
    Bytes(u64),
    /// This fraction of the machine's memory, `0 < f <= 1`.
    Fraction(f64),
    /// The machine's memory divided by the workers sharing it.
    Auto,
}

/// Why a memory limit could not be parsed or resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum MemoryLimitError {
    /// Nothing was given.
    Empty,
    /// Not a number, with or without a unit.
    NotANumber { text: String },
    /// A number followed by something that is not a unit this parser knows.
    UnknownUnit { text: String, unit: String },
    /// A number with a decimal point and no unit is a fraction of the machine's memory, and
    /// must be more than 0 and at most 1.
    FractionOutOfRange { text: String },
    /// More bytes than a `u64` counts.
    TooLarge { text: String },
    /// A fraction or `auto` needs the machine's memory, which could not be read.
    MachineMemoryUnknown { reason: String },
}

impl MemoryLimitError {
    /// Whether trying again can help: never. A spelling stays wrong, and a machine whose
    /// `/proc/meminfo` cannot be read (no procfs, not Linux) will not grow one; give bytes.
    pub fn retry_may_help(&self) -> bool {
        false
    }
}

impl fmt::Display for MemoryLimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const FORMS: &str = "expected bytes (300000000), a size (300MB, 300M, 4GiB), a fraction \
                             of the machine's memory (0.25), auto, or 0 for no limit";
        match self {
            MemoryLimitError::Empty => write!(f, "no memory limit given: {FORMS}"),
            MemoryLimitError::NotANumber { text } => write!(f, "{text:?} is not a size: {FORMS}"),
            MemoryLimitError::UnknownUnit { text, unit } => write!(
                f,
                "{text:?} has an unknown unit {unit:?} (B, K, KB, M, MB, G, GB, T, TB, KiB, MiB, \
                 GiB or TiB)"
            ),
            MemoryLimitError::FractionOutOfRange { text } => write!(
                f,
                "{text:?} is read as a fraction of the machine's memory and must be more than 0 \
                 and at most 1 (give bytes as an integer, or a unit: 2GB)"
            ),
            MemoryLimitError::TooLarge { text } => write!(f, "{text:?} is too many bytes"),
            MemoryLimitError::MachineMemoryUnknown { reason } => write!(
                f,
                "cannot tell the machine's memory for a fractional or auto memory limit \
                 ({reason}): give the limit in bytes or with a unit (300MB)"
            ),
        }
    }
}

impl std::error::Error for MemoryLimitError {}

/// Parses a memory limit as written (see the module's doc for the forms). Pure.
pub fn parse_memory_limit_spec(text: &str) -> Result<MemoryLimitSpec, MemoryLimitError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(MemoryLimitError::Empty);
    }
    if trimmed.eq_ignore_ascii_case("auto") {
        return Ok(MemoryLimitSpec::Auto);
    }
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = (&trimmed[..split], trimmed[split..].trim());
    let not_a_number = || MemoryLimitError::NotANumber {
        text: text.to_owned(),
    };
    if number.is_empty() || number.matches('.').count() > 1 || number == "." {
        return Err(not_a_number());
    }
    if unit.is_empty() && number.contains('.') {
        let f: f64 = number.parse().map_err(|_| not_a_number())?;
        return if f > 0.0 && f <= 1.0 {
            Ok(MemoryLimitSpec::Fraction(f))
        } else {
            Err(MemoryLimitError::FractionOutOfRange {
                text: text.to_owned(),
            })
        };
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => {
            return Err(MemoryLimitError::UnknownUnit {
                text: text.to_owned(),
                unit: unit.to_owned(),
            })
        }
    };
    let too_large = || MemoryLimitError::TooLarge {
        text: text.to_owned(),
    };
    let bytes = if let Ok(n) = number.parse::<u64>() {
        n.checked_mul(multiplier).ok_or_else(too_large)?
    } else if number.bytes().all(|b| b.is_ascii_digit()) {
        // Digits only, yet not a u64: too many of them.
        return Err(too_large());
    } else {
        let f: f64 = number.parse().map_err(|_| not_a_number())?;
        let bytes = (f * multiplier as f64).round();
        // `u64::MAX as f64` rounds up to 2^64, which itself does not fit.
        if bytes >= u64::MAX as f64 {
            return Err(too_large());
        }
        bytes as u64
    };
    Ok(if bytes == 0 {
        MemoryLimitSpec::None
    } else {
        MemoryLimitSpec::Bytes(bytes)
    })
}

impl MemoryLimitSpec {
    /// The limit in bytes (0: none) for one of `workers` workers on a machine of
    /// `machine_bytes` (asked for only by a fraction or `auto`). Pure.
    pub fn resolve(
        self,
        workers: u64,
        machine_bytes: impl FnOnce() -> Result<u64, MemoryLimitError>,
    ) -> Result<u64, MemoryLimitError> {
        Ok(match self {
            MemoryLimitSpec::None => 0,
            MemoryLimitSpec::Bytes(n) => n,
            // At least one byte: a fraction of a tiny machine still means "a limit".
            MemoryLimitSpec::Fraction(f) => ((machine_bytes()? as f64 * f) as u64).max(1),
            MemoryLimitSpec::Auto => (machine_bytes()? / workers.max(1)).max(1),
        })
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes (the file says kB, meaning KiB). Pure.
pub fn meminfo_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

/// The machine's memory: `MemTotal` of `/proc/meminfo`.
pub fn machine_memory_bytes() -> Result<u64, MemoryLimitError> {
    const PATH: &str = "/proc/meminfo";
    let text =
        std::fs::read_to_string(PATH).map_err(|e| MemoryLimitError::MachineMemoryUnknown {
            reason: format!("{PATH}: {e}"),
        })?;
    meminfo_total_bytes(&text).ok_or_else(|| MemoryLimitError::MachineMemoryUnknown {
        reason: format!("{PATH} has no MemTotal line in kB"),
    })
}

/// A clap value parser for `zask-worker --memory-limit`: the limit in bytes (0: none) of one
/// worker, reading the machine's memory for a fraction or `auto`.
/// The resident bytes in a `/proc/PID/statm` text (its second field, in pages of
/// `page_bytes`); None if it is not one.
pub fn statm_resident_bytes(statm: &str, page_bytes: u64) -> Option<u64> {
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    pages.checked_mul(page_bytes)
}

/// The resident memory of process `pid`, from `/proc/PID/statm`.
pub fn resident_bytes(pid: u32) -> std::io::Result<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm"))?;
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = u64::try_from(page).unwrap_or(4096);
    statm_resident_bytes(&statm, page).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unreadable /proc/{pid}/statm: {statm:?}"),
        )
    })
}

pub fn parse_memory_limit(text: &str) -> Result<u64, MemoryLimitError> {
    parse_memory_limit_spec(text)?.resolve(1, machine_memory_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(text: &str) -> u64 {
        match parse_memory_limit_spec(text) {
            Ok(MemoryLimitSpec::Bytes(n)) => n,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn sizes_with_decimal_and_binary_units() {
        assert_eq!(bytes("300MB"), 300_000_000);
        assert_eq!(bytes("300M"), 300_000_000);
        assert_eq!(bytes("300mb"), 300_000_000);
        assert_eq!(bytes("300 MB"), 300_000_000);
        assert_eq!(bytes("4GiB"), 4 << 30);
        assert_eq!(bytes("4G"), 4_000_000_000);
        assert_eq!(bytes("4gb"), 4_000_000_000);
        assert_eq!(bytes("2KiB"), 2048);
        assert_eq!(bytes("3MiB"), 3 << 20);
        assert_eq!(bytes("1TiB"), 1 << 40);
        assert_eq!(bytes("7k"), 7_000);
        assert_eq!(bytes("1.5GB"), 1_500_000_000);
        assert_eq!(bytes("0.5KiB"), 512);
        assert_eq!(bytes("123B"), 123);
    }

    #[test]
    fn a_plain_integer_is_bytes_and_zero_is_no_limit() {
        assert_eq!(bytes("300000000"), 300_000_000);
        assert_eq!(bytes(" 12 "), 12);
        // An integer 1 is one byte; the whole machine is 1.0.
        assert_eq!(bytes("1"), 1);
        assert_eq!(parse_memory_limit_spec("0"), Ok(MemoryLimitSpec::None));
        assert_eq!(parse_memory_limit_spec("0MB"), Ok(MemoryLimitSpec::None));
    }

    #[test]
    fn a_number_with_a_point_and_no_unit_is_a_fraction_of_the_machine() {
        assert_eq!(
            parse_memory_limit_spec("0.25"),
            Ok(MemoryLimitSpec::Fraction(0.25))
        );
        assert_eq!(
            parse_memory_limit_spec("1.0"),
            Ok(MemoryLimitSpec::Fraction(1.0))
        );
        for text in ["0.0", "1.5", "0."] {
            assert_eq!(
                parse_memory_limit_spec(text),
                Err(MemoryLimitError::FractionOutOfRange { text: text.into() }),
                "{text}"
            );
        }
        assert_eq!(parse_memory_limit_spec("AUTO"), Ok(MemoryLimitSpec::Auto));
    }

    #[test]
    fn wrong_spellings_are_typed_errors_that_say_what_is_accepted() {
        assert_eq!(parse_memory_limit_spec(" "), Err(MemoryLimitError::Empty));
        for text in ["MB", "abc", "1.2.3GB", ".", "-5", "1e9"] {
            let e = parse_memory_limit_spec(text).unwrap_err();
            assert!(
                matches!(
                    e,
                    MemoryLimitError::NotANumber { .. } | MemoryLimitError::UnknownUnit { .. }
                ),
                "{text}: {e:?}"
            );
            assert!(!e.retry_may_help());
        }
        let e = parse_memory_limit_spec("300XB").unwrap_err();
        assert_eq!(
            e,
            MemoryLimitError::UnknownUnit {
                text: "300XB".into(),
                unit: "XB".into()
            }
        );
        assert!(e.to_string().contains("MiB"), "{e}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
        for text in ["99999999999999999999", "20000000000TB", "99999999999.5TB"] {
            assert_eq!(
                parse_memory_limit_spec(text),
                Err(MemoryLimitError::TooLarge { text: text.into() }),
                "{text}"
            );
        }
    }

    #[test]
    fn fractions_and_auto_resolve_against_the_machine_and_the_workers() {
        let machine = || Ok(8_000);
        let spec = |t| parse_memory_limit_spec(t).unwrap();
        assert_eq!(spec("0.25").resolve(1, machine), Ok(2_000));
        assert_eq!(spec("auto").resolve(1, machine), Ok(8_000));
        assert_eq!(spec("auto").resolve(4, machine), Ok(2_000));
        assert_eq!(spec("0").resolve(1, machine), Ok(0));
        // Bytes never ask for the machine's memory.
        let unknown = || {
            Err(MemoryLimitError::MachineMemoryUnknown {
                reason: "no procfs".into(),
            })
        };
        assert_eq!(spec("300MB").resolve(1, unknown), Ok(300_000_000));
        let e = spec("0.5").resolve(1, unknown).unwrap_err();
        assert!(matches!(e, MemoryLimitError::MachineMemoryUnknown { .. }));
        assert!(e.to_string().contains("no procfs"), "{e}");
    }

    #[test]
    fn meminfo_total_is_read_in_kib() {
        let text = "MemTotal:       24514396 kB\nMemFree:         9000000 kB\n";
        assert_eq!(meminfo_total_bytes(text), Some(24_514_396 * 1024));
        assert_eq!(meminfo_total_bytes("MemFree: 1 kB\n"), None);
        assert_eq!(meminfo_total_bytes("MemTotal: lots\n"), None);
        assert_eq!(meminfo_total_bytes("MemTotal: 5 pages\n"), None);
    }

    #[test]
    fn resident_memory_is_the_second_statm_field_in_pages() {
        assert_eq!(
            statm_resident_bytes("1000 250 30 5 0 100 0\n", 4096),
            Some(1_024_000)
        );
        assert_eq!(statm_resident_bytes("1000", 4096), None);
        assert_eq!(statm_resident_bytes("a b c", 4096), None);
        let own = resident_bytes(std::process::id()).unwrap();
        assert!(own > 0, "this test process has some resident memory");
    }
}
