//! The windows workload: clicks counted per user in tumbling windows, each
//! window's final count said once (`suppress`), and views left-joined with
//! the clicks of their user within two seconds; a generator of records in
//! rounds of time, with records late enough to be dropped, and the
//! outputs a reference derives from them.
//!
//! Records carry their time in their value (`Consumed::timestamp`), so the
//! windows do not depend on when the test wrote them. Every round has
//! clicks of every user, so each task's stream time is the round's; late
//! records come only after a round's own records.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use weir::serde::{Nullable, Utf8, I64};
use weir::window::{JoinWindows, StreamJoined, Suppressed, TimeWindows, Windowed, WindowedSerde};
use weir::{Consumed, Grouped, Materialized, Produced, Serdes, StreamsBuilder, Topology};

pub const PARTITIONS: i32 = 2;
pub const USERS: u32 = 8;
/// A round's time step.
pub const ROUND_MS: i64 = 1_000;
const WINDOW_MS: i64 = 10_000;
const GRACE_MS: i64 = 5_000;
const JOIN_MS: i64 = 2_000;
/// A task reads its clicks and views partitions in no set order, so one
/// may run ahead of the other by a phase: the join's grace covers that,
/// which makes its results those of one stream time for both.
const JOIN_GRACE_MS: i64 = 60_000;

/// Topic names of one run (all with the cluster's prefix).
#[derive(Debug, Clone)]
pub struct Topics {
    pub clicks: String,
    pub views: String,
    pub finals: String,
    pub view_clicks: String,
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Topics {
        Topics {
            clicks: format!("{prefix}clicks"),
            views: format!("{prefix}views"),
            finals: format!("{prefix}click-finals"),
            view_clicks: format!("{prefix}view-clicks"),
        }
    }

    pub fn all(&self) -> [&str; 4] {
        [&self.clicks, &self.views, &self.finals, &self.view_clicks]
    }
}

/// A record's time: its value, the milliseconds of its event.
fn time_of(value: &str, arrived: i64) -> i64 {
    value.parse().unwrap_or(arrived)
}

/// clicks → count per user and 10 s window (grace 5 s), suppressed until
/// each window closes → click-finals; views ⟕ clicks within 2 s (grace
/// 60 s) → view-clicks `v<time>+c<time>`, or `v<time>+_` for a view no
/// click joined.
pub fn topology(topics: &Topics) -> Topology {
    let builder = StreamsBuilder::new();
    let clicks = builder.stream(
        &topics.clicks,
        Consumed::with(Utf8, Utf8).timestamp(|_, value: &String, arrived| time_of(value, arrived)),
    );
    let views = builder.stream(
        &topics.views,
        Consumed::with(Utf8, Utf8).timestamp(|_, value: &String, arrived| time_of(value, arrived)),
    );
    clicks
        .group_by_key(Grouped::with(Utf8, Utf8))
        .windowed_by(TimeWindows::of(Duration::from_millis(WINDOW_MS as u64)).grace(ms(GRACE_MS)))
        .count(Materialized::named("clicks-per-window"))
        .suppress(
            Suppressed::UntilWindowCloses,
            Serdes::with(WindowedSerde::new(Utf8), I64).named("click-finals"),
        )
        .to_stream()
        .to(&topics.finals, Produced::with(WindowedSerde::new(Utf8), Nullable(I64)));
    views
        .left_join_stream(
            &clicks,
            |view, click| format!("v{view}+{}", click.map_or("_".to_string(), |c| format!("c{c}"))),
            JoinWindows::of(ms(JOIN_MS)).grace(ms(JOIN_GRACE_MS)),
            StreamJoined::with(Utf8, Utf8, Utf8).named("view-clicks"),
        )
        .to(&topics.view_clicks, Produced::with(Utf8, Utf8));
    builder.build().expect("the windows topology is valid")
}

fn ms(ms: i64) -> Duration {
    Duration::from_millis(ms as u64)
}

/// One input record: a click or a view of a user at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub click: bool,
    pub user: u32,
    pub time: i64,
}

impl Event {
    pub fn key(&self) -> String {
        format!("u{}", self.user)
    }
}

/// The records of rounds `from..to`: each round's clicks (every user
/// but a few) and views (some of a user who never clicks); a phase starts
/// with records 20 rounds late.
pub fn rounds(from: i64, to: i64) -> Vec<Event> {
    let mut events = Vec::new();
    let late = from - 20;
    if late >= 0 {
        for user in [0, USERS / 2] {
            events.push(Event {
                click: true,
                user,
                time: late * ROUND_MS,
            });
            events.push(Event {
                click: false,
                user: user + 1,
                time: late * ROUND_MS,
            });
        }
    }
    for round in from..to {
        let time = round * ROUND_MS;
        for user in 0..USERS {
            // Every user clicks in every round but some; user 0 always, so
            // that every partition's stream time moves with the rounds.
            if user == 0 || (round + i64::from(user)) % 3 != 0 {
                events.push(Event {
                    click: true,
                    user,
                    time,
                });
            }
            if (round * 7 + i64::from(user)) % 5 == 0 {
                events.push(Event {
                    click: false,
                    user,
                    time,
                });
            }
        }
        // Views of a user who never clicks: no click joins them.
        if round % 4 == 0 {
            events.push(Event {
                click: false,
                user: USERS,
                time,
            });
        }
    }
    events
}

/// The last round, at which every user clicks: it closes every window of
/// the rounds before `last - 15` and every join window of those before
/// `last - 64`.
pub fn closing_round(last: i64) -> Vec<Event> {
    (0..USERS)
        .map(|user| Event {
            click: true,
            user,
            time: last * ROUND_MS,
        })
        .collect()
}

/// What the outputs must say once every event was processed, in order.
pub struct Expected {
    /// Each closed window's count.
    pub finals: BTreeMap<Windowed<String>, i64>,
    /// Every joined view and every view alone that no click can join any more.
    pub view_clicks: BTreeSet<(String, String)>,
}

/// Applies the operations' definitions to `events` with one stream time
/// for all (see the module's doc for why that is each task's).
pub fn expected(events: &[Event]) -> Expected {
    let mut now = i64::MIN;
    let mut counts: BTreeMap<Windowed<String>, i64> = BTreeMap::new();
    let mut clicks = Vec::new();
    let mut views = Vec::new();
    for event in events {
        now = now.max(event.time);
        let start = event.time - event.time % WINDOW_MS;
        if event.click {
            if start + WINDOW_MS + GRACE_MS > now {
                *counts
                    .entry(Windowed::new(event.key(), start, start + WINDOW_MS))
                    .or_default() += 1;
            }
            if event.time + JOIN_MS + JOIN_GRACE_MS >= now {
                clicks.push(*event);
            }
        } else if event.time + JOIN_MS + JOIN_GRACE_MS >= now {
            views.push(*event);
        }
    }
    let finals = counts
        .into_iter()
        .filter(|(window, _)| window.window.end + GRACE_MS <= now)
        .collect();
    let mut view_clicks = BTreeSet::new();
    for view in &views {
        let partners: Vec<&Event> = clicks
            .iter()
            .filter(|c| c.user == view.user && (c.time - view.time).abs() <= JOIN_MS)
            .collect();
        for click in &partners {
            view_clicks.insert((view.key(), format!("v{}+c{}", view.time, click.time)));
        }
        if partners.is_empty() && view.time + 2 * JOIN_MS + JOIN_GRACE_MS < now {
            view_clicks.insert((view.key(), format!("v{}+_", view.time)));
        }
    }
    Expected { finals, view_clicks }
}

/// Writes `events` to their topics and waits until the brokers have them.
pub fn write(producer: &weir::testing::kafka::TestProducer, topics: &Topics, events: &[Event]) {
    for event in events {
        let topic = if event.click { &topics.clicks } else { &topics.views };
        producer
            .send(topic, &Utf8, &Utf8, &event.key(), Some(&event.time.to_string()))
            .expect("the event is sent");
    }
    producer.flush().expect("the events are flushed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_records_count_for_nothing_and_closed_windows_are_final() {
        let mut events = rounds(0, 30);
        events.extend(rounds(30, 40));
        events.extend(closing_round(120));
        let expected = expected(&events);
        assert!(
            rounds(0, 1).iter().all(|e| e.time == 0),
            "the first phase has no late records"
        );
        assert!(rounds(30, 31)[..4].iter().all(|e| e.time == 10_000));
        let u0 = |start: i64| {
            expected
                .finals
                .get(&Windowed::new("u0".to_string(), start, start + WINDOW_MS))
        };
        // User 0 clicks once a round; the late click at round 10 is dropped.
        assert_eq!(u0(10_000), Some(&10));
        assert_eq!(u0(30_000), Some(&10));
        assert!(expected.finals.keys().all(|w| w.window.end + GRACE_MS <= 120_000));
        assert!(expected.view_clicks.iter().any(|(_, v)| v.ends_with("+_")));
        assert!(expected.view_clicks.iter().any(|(_, v)| v.contains("+c")));
    }
}
