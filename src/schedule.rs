//! When a source runs: `idle` (continuously, on events), `every 15m`, `daily 06:00`, and
//! windows such as `every 15m between 06:00-20:00 on mon-fri`. Pure: parsing and "the next
//! wake-up after now", no clocks of its own.

use std::time::Duration;

use chrono::{Datelike, Duration as Span, NaiveDateTime, NaiveTime, Weekday};

/// A parsed `schedule` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Continuously: IMAP IDLE, file-system events (with a periodic rescan as a safety net).
    Idle,
    /// Every interval, optionally only inside a daily window on some weekdays.
    Every {
        /// The interval.
        interval: Duration,
        /// The window, if any.
        window: Option<Window>,
    },
    /// Once a day at this local time.
    Daily(NaiveTime),
}

/// `between HH:MM-HH:MM on mon-fri`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Start of the window (inclusive).
    pub from: NaiveTime,
    /// End of the window (exclusive).
    pub to: NaiveTime,
    /// The weekdays it applies to (all when the `on` part is left out).
    pub days: Vec<Weekday>,
}

impl std::fmt::Display for Schedule {
    /// The schedule as written in the config, roughly (`every 15m between 06:00-20:00`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Idle => f.write_str("idle"),
            Schedule::Daily(at) => write!(f, "daily {}", at.format("%H:%M")),
            Schedule::Every { interval, window } => {
                let secs = interval.as_secs();
                match (secs % 3600, secs % 60) {
                    _ if secs == 0 => write!(f, "every {}ms", interval.as_millis())?,
                    (0, _) => write!(f, "every {}h", secs / 3600)?,
                    (_, 0) => write!(f, "every {}m", secs / 60)?,
                    _ => write!(f, "every {secs}s")?,
                }
                if let Some(w) = window {
                    write!(
                        f,
                        " between {}-{}",
                        w.from.format("%H:%M"),
                        w.to.format("%H:%M")
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// Parses `"2s"`, `"15m"`, `"1h"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} needs a unit: ms, s, m or h"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a number with a unit"))?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m or h"
            ));
        }
    };
    if d.is_zero() {
        return Err(format!("{text:?} must be longer than zero"));
    }
    Ok(d)
}

impl Schedule {
    /// Parses a schedule value; the error says what form is expected.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            ["idle"] => Ok(Schedule::Idle),
            ["daily", time] => Ok(Schedule::Daily(parse_time(time)?)),
            ["every", interval, rest @ ..] => {
                let interval = parse_duration(interval)?;
                let window = match rest {
                    [] => None,
                    ["between", range] => Some(parse_window(range, None)?),
                    ["between", range, "on", days] => Some(parse_window(range, Some(days))?),
                    _ => return Err(expected(text)),
                };
                Ok(Schedule::Every { interval, window })
            }
            _ => Err(expected(text)),
        }
    }

    /// The next time a pass should start after `now` (local time), when the last one started
    /// at `last`. `None` for `idle`, which runs on events.
    pub fn next_after(
        &self,
        now: NaiveDateTime,
        last: Option<NaiveDateTime>,
    ) -> Option<NaiveDateTime> {
        match self {
            Schedule::Idle => None,
            Schedule::Daily(at) => {
                let today = now.date().and_time(*at);
                Some(if today > now {
                    today
                } else {
                    today + Span::days(1)
                })
            }
            Schedule::Every { interval, window } => {
                let step = Span::from_std(*interval).unwrap_or(Span::MAX);
                let due = last.map_or(now, |l| (l + step).max(now));
                match window {
                    None => Some(due),
                    Some(w) => Some(w.first_open_at_or_after(due)),
                }
            }
        }
    }
}

impl Window {
    fn is_open(&self, at: NaiveDateTime) -> bool {
        self.days.contains(&at.weekday()) && at.time() >= self.from && at.time() < self.to
    }

    fn first_open_at_or_after(&self, at: NaiveDateTime) -> NaiveDateTime {
        if self.is_open(at) {
            return at;
        }
        // The window opens at `from` on the first allowed day from today on (a week at most).
        (0..8)
            .map(|d| (at.date() + Span::days(d)).and_time(self.from))
            .find(|start| *start >= at && self.days.contains(&start.weekday()))
            .unwrap_or(at)
    }
}

fn expected(text: &str) -> String {
    format!(
        "unknown schedule {text:?}: use \"idle\", \"every 15m\", \"daily 06:00\" or \"every 15m between 06:00-20:00 on mon-fri\""
    )
}

fn parse_time(text: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(text, "%H:%M").map_err(|_| format!("{text:?} is not a time HH:MM"))
}

fn parse_window(range: &str, days: Option<&str>) -> Result<Window, String> {
    let (from, to) = range
        .split_once('-')
        .ok_or_else(|| format!("{range:?} is not a range HH:MM-HH:MM"))?;
    let (from, to) = (parse_time(from)?, parse_time(to)?);
    if from >= to {
        return Err(format!("the window {range:?} ends before it starts"));
    }
    let days = match days {
        None => ALL_DAYS.to_vec(),
        Some(spec) => parse_days(spec)?,
    };
    Ok(Window { from, to, days })
}

const ALL_DAYS: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

fn parse_days(spec: &str) -> Result<Vec<Weekday>, String> {
    let day = |name: &str| {
        ALL_DAYS
            .iter()
            .copied()
            .find(|d| d.to_string().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                format!("unknown weekday {name:?}: use mon, tue, wed, thu, fri, sat, sun")
            })
    };
    let mut days = Vec::new();
    for part in spec.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (mut d, end) = (day(a)?, day(b)?);
                days.push(d);
                while d != end {
                    d = d.succ();
                    days.push(d);
                }
            }
            None => days.push(day(part)?),
        }
    }
    Ok(days)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, min, 0)
            .unwrap()
    }

    #[test]
    fn every_runs_an_interval_after_the_last_pass() {
        let s = Schedule::parse("every 15m").unwrap();
        let now = at(2026, 11, 20, 10, 0);
        assert_eq!(s.next_after(now, None), Some(now));
        assert_eq!(
            s.next_after(now, Some(at(2026, 11, 20, 9, 50))),
            Some(at(2026, 11, 20, 10, 5))
        );
    }

    #[test]
    fn daily_runs_tomorrow_once_the_time_has_passed() {
        let s = Schedule::parse("daily 06:00").unwrap();
        assert_eq!(
            s.next_after(at(2026, 11, 20, 5, 0), None),
            Some(at(2026, 11, 20, 6, 0))
        );
        assert_eq!(
            s.next_after(at(2026, 11, 20, 7, 0), None),
            Some(at(2026, 11, 21, 6, 0))
        );
    }

    #[test]
    fn window_waits_for_the_next_working_morning() {
        let s = Schedule::parse("every 15m between 06:00-20:00 on mon-fri").unwrap();
        // 2026-11-20 is a Friday; 21:00 is after the window, the next opening is Monday 06:00.
        assert_eq!(
            s.next_after(at(2026, 11, 20, 21, 0), None),
            Some(at(2026, 11, 23, 6, 0))
        );
        assert_eq!(
            s.next_after(at(2026, 11, 20, 12, 0), None),
            Some(at(2026, 11, 20, 12, 0))
        );
    }

    #[test]
    fn durations_take_milliseconds_to_hours() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["0ms", "5", "5 days", "ms"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn bad_schedules_say_what_is_expected() {
        for bad in [
            "often",
            "every",
            "every 5x",
            "daily 25:00",
            "every 5m between 20:00-06:00",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(Schedule::parse("every 1h between 08:00-17:00 on mon,wed,fri").is_ok());
    }
}
