//! Chaos on real brokers: a few instances of an application in their own
//! processes, and a seeded schedule of faults among them — SIGKILL, SIGTERM,
//! and SIGSTOP for a random time, sometimes longer than the session so
//! that the group gives the stopped instance's partitions away and it
//! wakes up as a stale member — at random moments (in a restore, in a
//! rebalance, right after a commit), with input arriving in between.
//! Killed and stopped instances are started again on their state
//! directories, as an orchestrator would.
//!
//! The schedule's randomness is the seed's (`WEIR_CHAOS_SEED` replays a
//! schedule's choices; the brokers' and processes' timing is not
//! replayed); `WEIR_CHAOS_ROUNDS` runs that many schedules.

use crate::instance::Instance;
use std::time::{Duration, Instant};

/// The seeds to run: `WEIR_CHAOS_SEED`, else `WEIR_CHAOS_ROUNDS` (default 1)
/// seeds from the clock.
pub fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("WEIR_CHAOS_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let rounds: u64 = std::env::var("WEIR_CHAOS_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1);
    (0..rounds).map(|round| base.wrapping_add(round)).collect()
}

/// How long a stopped instance may stand still: up to twice the session
/// timeout the tests configure (6 s).
const LONGEST_STALL: Duration = Duration::from_secs(12);

/// What happened to the instances, for reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct Faults {
    pub kills: usize,
    pub terminations: usize,
    pub stalls: usize,
    /// Stalls longer than the session timeout.
    pub long_stalls: usize,
    /// Instances found exited on an error, and started again.
    pub failures: usize,
}

/// A fleet of instances under a fault schedule.
pub struct Chaos<'a> {
    seed: u64,
    rng: fastrand::Rng,
    start: Box<dyn FnMut(usize, usize) -> Instance + 'a>,
    slots: Vec<Option<Instance>>,
    incarnations: Vec<usize>,
    started: Instant,
    events: Vec<String>,
    pub faults: Faults,
}

impl<'a> Chaos<'a> {
    /// Starts `instances` instances; `start(slot, incarnation)` starts one
    /// in its slot's state directory.
    pub fn new(seed: u64, instances: usize, start: impl FnMut(usize, usize) -> Instance + 'a) -> Self {
        let mut chaos = Chaos {
            seed,
            rng: fastrand::Rng::with_seed(seed),
            start: Box::new(start),
            slots: (0..instances).map(|_| None).collect(),
            incarnations: vec![0; instances],
            started: Instant::now(),
            events: Vec::new(),
            faults: Faults::default(),
        };
        for slot in 0..instances {
            chaos.start(slot);
        }
        chaos
    }

    fn event(&mut self, event: String) {
        let line = format!("[{:>6.1}s] {event}", self.started.elapsed().as_secs_f64());
        eprintln!("{line}");
        self.events.push(line);
    }

    fn start(&mut self, slot: usize) {
        let incarnation = self.incarnations[slot];
        self.incarnations[slot] += 1;
        let instance = (self.start)(slot, incarnation);
        self.event(format!("{} started", instance.name()));
        self.slots[slot] = Some(instance);
    }

    fn pause(&mut self, at_most: Duration) {
        let pause = Duration::from_millis(self.rng.u64(0..=at_most.as_millis() as u64));
        std::thread::sleep(pause);
    }

    /// Runs `faults` faults; `between(i)` runs before fault `i` (to write
    /// input), and a random pause of up to 3 s follows it.
    pub fn run(&mut self, faults: usize, between: &mut dyn FnMut(usize)) {
        for fault in 0..faults {
            between(fault);
            let slot = self.rng.usize(..self.slots.len());
            match self.rng.u8(0..3) {
                0 => self.kill(slot),
                1 => self.terminate(slot),
                _ => self.stall(slot),
            }
            self.pause(Duration::from_secs(3));
            self.heal();
        }
    }

    /// SIGKILL, and a new incarnation a moment later.
    fn kill(&mut self, slot: usize) {
        let Some(mut instance) = self.slots[slot].take() else {
            return;
        };
        instance.kill();
        self.faults.kills += 1;
        self.event(format!("{} killed", instance.name()));
        self.pause(Duration::from_secs(2));
        self.start(slot);
    }

    /// SIGTERM: the instance must stop cleanly; then a new incarnation.
    fn terminate(&mut self, slot: usize) {
        let Some(mut instance) = self.slots[slot].take() else {
            return;
        };
        let status = instance.terminate(Duration::from_secs(90));
        self.faults.terminations += 1;
        assert!(
            status.success(),
            "seed {}: {} did not stop cleanly on SIGTERM: {status}\n{}",
            self.seed,
            instance.name(),
            instance.log_tail()
        );
        self.event(format!("{} stopped", instance.name()));
        self.start(slot);
    }

    /// SIGSTOP for a random time, then SIGCONT.
    fn stall(&mut self, slot: usize) {
        let stall = Duration::from_millis(self.rng.u64(500..=LONGEST_STALL.as_millis() as u64));
        let Some(instance) = &self.slots[slot] else { return };
        instance.stall();
        let name = instance.name().to_string();
        self.faults.stalls += 1;
        if stall > Duration::from_secs(6) {
            self.faults.long_stalls += 1;
        }
        self.event(format!("{name} stopped (SIGSTOP) for {:.1}s", stall.as_secs_f64()));
        std::thread::sleep(stall);
        if let Some(instance) = &self.slots[slot] {
            instance.wake();
        }
        self.event(format!("{name} woken"));
    }

    /// Restarts instances that exited on an error (a stale member whose
    /// queued records timed out stops so), as an orchestrator would, and
    /// records why they stopped.
    pub fn heal(&mut self) {
        for slot in 0..self.slots.len() {
            let exited = self.slots[slot].as_mut().is_none_or(Instance::has_exited);
            if exited {
                if let Some(instance) = self.slots[slot].take() {
                    let log = instance.log();
                    let reason = log
                        .lines()
                        .rev()
                        .find(|l| l.contains("error"))
                        .unwrap_or("no error logged");
                    self.faults.failures += 1;
                    self.event(format!("{} had exited: {}", instance.name(), reason.trim()));
                }
                self.start(slot);
            }
        }
    }

    /// Restarts one instance once every session of a gone member has
    /// expired, for brokers whose coordinator leaves a dead member's
    /// partitions with it until another member joins (Tansu 0.6.0): the
    /// join makes a generation without it, as a new deployment would.
    pub fn rejoin_after_sessions_expire(&mut self) {
        std::thread::sleep(crate::instance::SESSION_EXPIRY);
        self.terminate(0);
    }

    /// The running instances.
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.slots.iter().flatten()
    }

    /// Stops every instance with SIGTERM; each must stop cleanly.
    pub fn stop(&mut self) {
        for slot in 0..self.slots.len() {
            if let Some(mut instance) = self.slots[slot].take() {
                if instance.has_exited() {
                    continue;
                }
                let status = instance.terminate(Duration::from_secs(90));
                assert!(
                    status.success(),
                    "seed {}: {} did not stop cleanly\n{}",
                    self.seed,
                    instance.name(),
                    instance.log_tail()
                );
            }
        }
    }

    /// The schedule so far and the last lines of every instance's log.
    pub fn report(&self) -> String {
        let tails: Vec<String> = self.instances().map(Instance::log_tail).collect();
        format!(
            "seed {} (replay with WEIR_CHAOS_SEED={}); faults {:?}\n{}\n{}",
            self.seed,
            self.seed,
            self.faults,
            self.events.join("\n"),
            tails.join("\n")
        )
    }
}
