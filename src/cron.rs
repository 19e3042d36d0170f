//! Cron schedules as CronJobs read them (upstream uses robfig/cron's standard parser):
//! five fields — minute, hour, day of month, month (1-12 or jan-dec), day of week (0-6 or
//! sun-sat) — each `*` or `?`, a number or name, a range `a-b`, with an optional step
//! `/n`, or a comma list of those; or a descriptor: @yearly/@annually, @monthly, @weekly,
//! @daily/@midnight, @hourly, `@every <duration>`. As robfig's, when both day fields are
//! restricted a day matching either runs; when either is `*`, both must match. Shared by
//! the API server (validation) and the CronJob controller (next run times, in the
//! CronJob's time zone).

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    Fields(Fields),
    Every(std::time::Duration),
}

/// One bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq)]
pub struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    /// Whether the day-of-month / day-of-week field was `*` or `?`.
    dom_any: bool,
    dow_any: bool,
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// A field's range and names (the name at index i stands for `first + i`).
struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

fn value(s: &str, b: &Bounds) -> Result<u32, String> {
    if let Some(i) = b.names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(i as u32 + b.min);
    }
    s.parse::<u32>().map_err(|_| format!("failed to parse int from {s}"))
}

/// One comma-separated part: `*`, `?`, `n`, `a-b`, each optionally `/step`.
/// Returns its bits and whether it is a bare `*` (or `?`, or `*/1`).
fn part(p: &str, b: &Bounds) -> Result<(u64, bool), String> {
    let (range, step) = match p.split_once('/') {
        Some((r, s)) => (r, Some(s.parse::<u32>().map_err(|_| format!("failed to parse int from {s}"))?)),
        None => (p, None),
    };
    let any = range == "*" || range == "?";
    let (lo, hi) = match (any, range.split_once('-')) {
        (true, _) => (b.min, b.max),
        (false, Some((lo, hi))) => (value(lo, b)?, value(hi, b)?),
        // `n/step` runs from n to the field's end
        (false, None) => {
            let v = value(range, b)?;
            (v, if step.is_some() { b.max } else { v })
        }
    };
    let step = step.unwrap_or(1);
    if lo < b.min {
        return Err(format!("beginning of range ({lo}) below minimum ({}): {p}", b.min));
    }
    if hi > b.max {
        return Err(format!("end of range ({hi}) above maximum ({}): {p}", b.max));
    }
    if lo > hi {
        return Err(format!("beginning of range ({lo}) beyond end of range ({hi}): {p}"));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {p}"));
    }
    let bits = (lo..=hi).step_by(step as usize).fold(0u64, |acc, v| acc | 1 << v);
    Ok((bits, any && step == 1))
}

fn field(f: &str, b: &Bounds) -> Result<(u64, bool), String> {
    f.split(',').try_fold((0u64, false), |(bits, any), p| part(p, b).map(|(pb, pa)| (bits | pb, any || pa)))
}

fn descriptor(s: &str) -> Result<Schedule, String> {
    let fields = match s {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => {
            let every = s.strip_prefix("@every ").ok_or_else(|| format!("unrecognized descriptor: {s}"))?;
            let d = crate::apiserver::parse_go_duration(every.trim())
                .map_err(|e| format!("failed to parse duration {s}: {e}"))?;
            // as robfig's Every: whole seconds, at least one
            return Ok(Schedule::Every(std::time::Duration::from_secs(d.as_secs().max(1))));
        }
    };
    parse(fields)
}

/// Parse a schedule; the error reads as robfig's.
pub fn parse(schedule: &str) -> Result<Schedule, String> {
    let s = schedule.trim();
    if s.is_empty() {
        return Err("empty spec string".into());
    }
    if s.starts_with('@') {
        return descriptor(s);
    }
    let f: Vec<&str> = s.split_whitespace().collect();
    if f.len() != 5 {
        return Err(format!("expected exactly 5 fields, found {}: {s}", f.len()));
    }
    let (minute, _) = field(f[0], &Bounds { min: 0, max: 59, names: &[] })?;
    let (hour, _) = field(f[1], &Bounds { min: 0, max: 23, names: &[] })?;
    let (dom, dom_any) = field(f[2], &Bounds { min: 1, max: 31, names: &[] })?;
    let (month, _) = field(f[3], &Bounds { min: 1, max: 12, names: &MONTHS })?;
    let (dow, dow_any) = field(f[4], &Bounds { min: 0, max: 6, names: &DAYS })?;
    Ok(Schedule::Fields(Fields { minute, hour, dom, month, dow, dom_any, dow_any }))
}

fn has(bits: u64, v: i8) -> bool {
    bits & (1 << v) != 0
}

impl Fields {
    fn day_matches(&self, dt: DateTime) -> bool {
        let dom = has(self.dom, dt.day());
        let dow = has(self.dow, dt.weekday().to_sunday_zero_offset());
        if self.dom_any || self.dow_any { dom && dow } else { dom || dow }
    }

    /// The first matching minute after `after`, in `tz` (searching five years, as robfig).
    fn next(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = after.to_zoned(tz.clone()).datetime();
        let mut dt = start.with().second(0).subsec_nanosecond(0).build().ok()?.checked_add(1.minute()).ok()?;
        let limit = start.year() + 5;
        while dt.year() <= limit {
            if !has(self.month, dt.month()) {
                dt = dt.first_of_month().checked_add(1.month()).ok()?.start_of_day();
            } else if !self.day_matches(dt) {
                dt = dt.start_of_day().checked_add(1.day()).ok()?;
            } else if !has(self.hour, dt.hour()) {
                dt = dt.with().minute(0).build().ok()?.checked_add(1.hour()).ok()?;
            } else if !has(self.minute, dt.minute()) {
                dt = dt.checked_add(1.minute()).ok()?;
            } else {
                let at = tz.to_zoned(dt).ok()?.timestamp();
                if at > after {
                    return Some(at);
                }
                dt = dt.checked_add(1.minute()).ok()?;
            }
        }
        None
    }
}

impl Schedule {
    /// The first run time strictly after `after`.
    pub fn next(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match self {
            Schedule::Fields(f) => f.next(after, tz),
            Schedule::Every(d) => {
                let whole = Timestamp::from_second(after.as_second()).ok()?;
                whole.checked_add(jiff::SignedDuration::try_from(*d).ok()?).ok()
            }
        }
    }
}

/// An IANA time zone by name (`spec.timeZone`), from the system's zoneinfo or the bundled database.
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(schedule: &str, after: &str) -> String {
        parse(schedule).unwrap().next(ts(after), &TimeZone::UTC).unwrap().to_string()
    }

    #[test]
    fn fields_ranges_steps_lists_and_names() {
        assert_eq!(next("* * * * *", "2024-01-01T10:00:30Z"), "2024-01-01T10:01:00Z");
        assert_eq!(next("*/15 * * * *", "2024-01-01T10:01:00Z"), "2024-01-01T10:15:00Z");
        assert_eq!(next("5/20 * * * *", "2024-01-01T10:26:00Z"), "2024-01-01T10:45:00Z");
        assert_eq!(next("0 9-17/4 * * *", "2024-01-01T13:00:00Z"), "2024-01-01T17:00:00Z");
        assert_eq!(next("30 2 * * mon,FRI", "2024-01-01T03:00:00Z"), "2024-01-05T02:30:00Z");
        assert_eq!(next("0 0 1 jan-mar *", "2024-03-02T00:00:00Z"), "2025-01-01T00:00:00Z");
        assert_eq!(next("0 0 29 2 *", "2024-03-01T00:00:00Z"), "2028-02-29T00:00:00Z");
        assert_eq!(next("0 12 ? * *", "2024-01-01T12:00:00Z"), "2024-01-02T12:00:00Z");
    }

    #[test]
    fn restricted_day_fields_match_either() {
        // the 13th, or any Friday (2024-09-06 is a Friday, the 13th is too)
        assert_eq!(next("0 0 13 * 5", "2024-09-01T00:00:00Z"), "2024-09-06T00:00:00Z");
        // with `*` in day of week, only the day of month counts
        assert_eq!(next("0 0 13 * *", "2024-09-01T00:00:00Z"), "2024-09-13T00:00:00Z");
    }

    #[test]
    fn descriptors() {
        assert_eq!(next("@hourly", "2024-01-01T10:20:00Z"), "2024-01-01T11:00:00Z");
        assert_eq!(next("@daily", "2024-01-01T10:20:00Z"), "2024-01-02T00:00:00Z");
        assert_eq!(next("@midnight", "2024-01-01T10:20:00Z"), "2024-01-02T00:00:00Z");
        assert_eq!(next("@weekly", "2024-01-01T10:20:00Z"), "2024-01-07T00:00:00Z");
        assert_eq!(next("@monthly", "2024-01-01T10:20:00Z"), "2024-02-01T00:00:00Z");
        assert_eq!(next("@yearly", "2024-01-01T10:20:00Z"), "2025-01-01T00:00:00Z");
        assert_eq!(next("@annually", "2024-01-01T10:20:00Z"), "2025-01-01T00:00:00Z");
        assert_eq!(next("@every 90s", "2024-01-01T10:20:00.5Z"), "2024-01-01T10:21:30Z");
    }

    #[test]
    fn time_zones() {
        let tz = time_zone("America/New_York").unwrap();
        // 09:00 in New York in January is 14:00 UTC
        let at = parse("0 9 * * *").unwrap().next(ts("2024-01-01T00:00:00Z"), &tz).unwrap();
        assert_eq!(at.to_string(), "2024-01-01T14:00:00Z");
        assert!(time_zone("Mars/Olympus").is_err());
    }

    #[test]
    fn bad_schedules() {
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 7",
            "*/0 * * * *",
            "5-1 * * * *",
            "a * * * *",
            "@often",
            "@every x",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
