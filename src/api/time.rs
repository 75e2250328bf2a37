//! Timestamps as Ironic writes them: microseconds and `+00:00`
//! (`2026-12-01T08:47:02.319383+00:00`), whatever precision the store kept
//! (records written before sub-second times have whole seconds and `Z`).

use std::time::SystemTime;

/// A stored RFC 3339 time in Ironic's form; text that is not one is shown
/// as it is.
pub fn ironic(stored: &str) -> String {
    match humantime::parse_rfc3339(stored) {
        Ok(at) => at_time(at),
        Err(_) => stored.to_string(),
    }
}

/// An optional stored time in Ironic's form.
pub fn ironic_opt(stored: Option<&str>) -> Option<String> {
    stored.map(ironic)
}

/// A moment in Ironic's form.
pub fn at_time(at: SystemTime) -> String {
    let text = humantime::format_rfc3339_micros(at).to_string();
    match text.strip_suffix('Z') {
        Some(bare) => format!("{bare}+00:00"),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_microseconds_and_an_offset() {
        assert_eq!(
            ironic("2026-12-01T08:47:02.319383Z"),
            "2026-12-01T08:47:02.319383+00:00"
        );
        assert_eq!(
            ironic("2026-01-01T00:00:00Z"),
            "2026-01-01T00:00:00.000000+00:00"
        );
        assert_eq!(ironic("not a time"), "not a time");
        assert_eq!(ironic_opt(None), None);
    }
}
