//! What Linux's `/proc` says about memory: the machine's total and available memory, and this
//! process's resident size. The one place the harness and the examples read `/proc`; where it
//! is absent or unreadable (not Linux, a restricted container) every answer is `None`.

use std::path::Path;

/// The machine's memory in bytes (`MemTotal` in `/proc/meminfo`).
pub fn total() -> Option<u64> {
    field_in(Path::new("/proc/meminfo"), "MemTotal")
}

/// The memory the kernel can hand out without swapping, in bytes (`MemAvailable` in
/// `/proc/meminfo`).
pub fn available() -> Option<u64> {
    field_in(Path::new("/proc/meminfo"), "MemAvailable")
}

/// This process's resident memory in bytes (`VmRSS` in `/proc/self/status`).
pub fn resident() -> Option<u64> {
    field_in(Path::new("/proc/self/status"), "VmRSS")
}

fn field_in(file: &Path, name: &str) -> Option<u64> {
    field(&std::fs::read_to_string(file).ok()?, name)
}

/// A `Name:   1234 kB` line's value in bytes. Both files spell sizes this way.
fn field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        if key != name {
            return None;
        }
        let kib: u64 = value.trim().strip_suffix("kB")?.trim().parse().ok()?;
        kib.checked_mul(1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       24589292 kB\n\
                           MemFree:        21020840 kB\n\
                           MemAvailable:   22896620 kB\n\
                           HugePages_Total:       0\n";

    #[test]
    fn reads_a_named_size_in_bytes() {
        assert_eq!(field(MEMINFO, "MemTotal"), Some(24_589_292 * 1024));
        assert_eq!(field(MEMINFO, "MemAvailable"), Some(22_896_620 * 1024));
    }

    #[test]
    fn a_field_must_match_its_whole_name() {
        // `MemAvailable` must not be found by looking for `Mem`, nor `MemTotal` by a prefix.
        assert_eq!(field(MEMINFO, "Mem"), None);
        assert_eq!(field(MEMINFO, "MemTota"), None);
    }

    #[test]
    fn missing_or_malformed_fields_are_none() {
        assert_eq!(field(MEMINFO, "VmRSS"), None);
        assert_eq!(
            field(MEMINFO, "HugePages_Total"),
            None,
            "no unit: not a size"
        );
        assert_eq!(field("VmRSS:\tlots kB\n", "VmRSS"), None);
        assert_eq!(field("", "MemTotal"), None);
        assert_eq!(field("VmRSS: 99999999999999999999 kB", "VmRSS"), None);
    }

    #[test]
    fn an_absent_file_is_none() {
        assert_eq!(
            field_in(Path::new("/nonexistent/meminfo"), "MemTotal"),
            None
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_machine_answers() {
        let (total, available) = (total(), available());
        assert!(total.is_some_and(|t| t > 0), "{total:?}");
        assert!(
            available.is_some_and(|a| Some(a) <= total),
            "{available:?} of {total:?}"
        );
        assert!(resident().is_some_and(|r| r > 0));
    }
}
