//! ACD routing benchmarks (HDR histograms, since the tail matters more than the mean).
//!
//! `cargo bench -p frontdoor-benches --bench acd`
//!
//! 1. Agent frees up (call ends, no wrap-up) with 10,000 callers queued over 60 requirement
//!    profiles in 5 queues and 1,000 agents: the core picks the first eligible caller in order
//!    and emits the offer. Timed: one `Acd::handle(CallEnded)`.
//! 2. Caller arrives with no free agent (10,000 queued): timed `Acd::handle(Enqueue)`.
//! 3. Caller arrives with ~1,000 free agents: the queue strategy picks one.
//! 4. The simulator runs one day of the 200-agent sample center; wall time printed.

use frontdoor_acd::sim::{self, SimConfig};
use frontdoor_acd::{
    Acd, AcdConfig, Action, AgentId, AgentProfile, AgentSkill, Enqueue, EntryId, EntryKind, Event,
    QueueConfig, QueueId, SkillId, SkillReq, Strategy, Time,
};
use hdrhistogram::Histogram;
use std::hint::black_box;
use std::time::{Duration, Instant};

const AGENTS: u32 = 1_000;
const QUEUED: usize = 10_000;
const LANGS: u32 = 4;
const PRODUCTS: u32 = 5;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn config(strategy: Strategy) -> AcdConfig {
    let queues = (0..PRODUCTS)
        .map(|p| QueueConfig {
            strategy,
            ..QueueConfig::new(QueueId(p))
        })
        .collect();
    AcdConfig {
        queues,
        offer_timeout_s: Some(15.0),
        ..AcdConfig::default()
    }
}

/// Languages are skills 0..4, products 10..15.
fn random_caller(rng: &mut Rng, id: u64) -> Enqueue {
    let product = rng.below(u64::from(PRODUCTS)) as u32;
    let lang = rng.below(u64::from(LANGS)) as u32;
    let tier = [3u8, 5, 7][rng.below(3) as usize];
    Enqueue {
        entry: EntryId(id),
        queue: QueueId(product),
        class: if rng.below(10) == 0 { 1 } else { 0 },
        kind: EntryKind::Live,
        requirements: Some(vec![
            SkillReq {
                skill: SkillId(lang),
                min_level: tier,
            },
            SkillReq {
                skill: SkillId(10 + product),
                min_level: tier - 2,
            },
        ]),
        enqueued_at: None,
    }
}

fn random_agent(rng: &mut Rng) -> AgentProfile {
    let mut skills = Vec::new();
    let l1 = rng.below(u64::from(LANGS)) as u32;
    skills.push(AgentSkill {
        skill: SkillId(l1),
        level: 5 + rng.below(6) as u8,
    });
    let l2 = (l1 + 1 + rng.below(u64::from(LANGS) - 1) as u32) % LANGS;
    skills.push(AgentSkill {
        skill: SkillId(l2),
        level: 1 + rng.below(10) as u8,
    });
    let mut queues = Vec::new();
    for _ in 0..3 {
        let p = rng.below(u64::from(PRODUCTS)) as u32;
        if !queues.contains(&QueueId(p)) {
            queues.push(QueueId(p));
            skills.push(AgentSkill {
                skill: SkillId(10 + p),
                level: 3 + rng.below(8) as u8,
            });
        }
    }
    AgentProfile {
        skills,
        queues,
        vip: rng.below(10) == 0,
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).unwrap_or_else(|e| panic!("histogram: {e}"))
}

fn report(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:<58} n={:>7}  p50 {:>6.2} µs  p99 {:>6.2} µs  p99.9 {:>7.2} µs  max {:>8.2} µs",
        h.len(),
        h.value_at_quantile(0.50) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.value_at_quantile(0.999) as f64 / 1e3,
        h.max() as f64 / 1e3,
    );
}

struct Clock(u64);
impl Clock {
    fn tick(&mut self) -> Time {
        self.0 += 1_000_000; // 1 ms of simulated time per input
        Time::from_nanos(self.0)
    }
}

fn handle(acd: &mut Acd, now: Time, ev: Event) {
    if let Err(e) = acd.handle(now, ev) {
        panic!("bench input refused: {e}");
    }
}

/// Accepts every pending offer; returns how many.
fn accept_all(acd: &mut Acd, now: Time, busy: &mut Vec<AgentId>) -> usize {
    let offers: Vec<(AgentId, EntryId)> = acd
        .drain_actions()
        .filter_map(|a| match a {
            Action::Offer { agent, entry, .. } => Some((agent, entry)),
            _ => None,
        })
        .collect();
    for &(agent, entry) in &offers {
        handle(acd, now, Event::OfferAccepted { agent, entry });
        busy.push(agent);
    }
    acd.drain_actions().for_each(drop);
    offers.len()
}

fn busy_center(strategy: Strategy, rng: &mut Rng, clock: &mut Clock) -> (Acd, Vec<AgentId>, u64) {
    let mut acd = Acd::new(&config(strategy)).unwrap_or_else(|e| panic!("{e}"));
    let mut busy = Vec::new();
    let mut next_id = 0u64;
    for a in 0..AGENTS {
        handle(
            &mut acd,
            clock.tick(),
            Event::AgentLogin {
                agent: AgentId(a),
                profile: random_agent(rng),
            },
        );
    }
    // Fill: every offer is accepted, until 10,000 callers wait.
    let total_waiting = |acd: &Acd| {
        (0..PRODUCTS)
            .map(|p| acd.waiting(QueueId(p)))
            .sum::<usize>()
    };
    while total_waiting(&acd) < QUEUED {
        next_id += 1;
        let now = clock.tick();
        handle(&mut acd, now, Event::Enqueue(random_caller(rng, next_id)));
        accept_all(&mut acd, now, &mut busy);
    }
    (acd, busy, next_id)
}

fn agent_frees_up(strategy: Strategy, label: &str) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut clock = Clock(0);
    let (mut acd, mut busy, mut next_id) = busy_center(strategy, &mut rng, &mut clock);
    let mut h_free = hist();
    let mut h_arrive = hist();
    let iterations = 200_000;
    for i in 0..iterations + 10_000 {
        if busy.is_empty() {
            break;
        }
        let idx = rng.below(busy.len() as u64) as usize;
        let agent = busy.swap_remove(idx);
        let now = clock.tick();
        let t0 = Instant::now();
        let r = acd.handle(now, black_box(Event::CallEnded { agent }));
        let dt = t0.elapsed();
        if let Err(e) = r {
            panic!("{e}");
        }
        if i >= 10_000 {
            h_free.record(dt.as_nanos() as u64).unwrap_or_default();
        }
        accept_all(&mut acd, now, &mut busy);
        // Keep 10,000 waiting: a new caller replaces the one just offered.
        next_id += 1;
        let now = clock.tick();
        let t0 = Instant::now();
        let r = acd.handle(
            now,
            black_box(Event::Enqueue(random_caller(&mut rng, next_id))),
        );
        let dt = t0.elapsed();
        if let Err(e) = r {
            panic!("{e}");
        }
        if i >= 10_000 {
            h_arrive.record(dt.as_nanos() as u64).unwrap_or_default();
        }
        accept_all(&mut acd, now, &mut busy);
    }
    let waiting: usize = (0..PRODUCTS).map(|p| acd.waiting(QueueId(p))).sum();
    report(
        &format!("agent frees -> pick caller [{label}] ({waiting} queued)"),
        &h_free,
    );
    report(&format!("caller arrives, all busy [{label}]"), &h_arrive);
}

fn caller_arrives_many_free(strategy: Strategy, label: &str) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut clock = Clock(0);
    let mut acd = Acd::new(&config(strategy)).unwrap_or_else(|e| panic!("{e}"));
    for a in 0..AGENTS {
        handle(
            &mut acd,
            clock.tick(),
            Event::AgentLogin {
                agent: AgentId(a),
                profile: random_agent(&mut rng),
            },
        );
    }
    let mut h = hist();
    let mut next_id = 0;
    for i in 0..110_000 {
        next_id += 1;
        let now = clock.tick();
        let t0 = Instant::now();
        let r = acd.handle(
            now,
            black_box(Event::Enqueue(random_caller(&mut rng, next_id))),
        );
        let dt = t0.elapsed();
        if let Err(e) = r {
            panic!("{e}");
        }
        if i >= 10_000 {
            h.record(dt.as_nanos() as u64).unwrap_or_default();
        }
        // Accept and immediately end: the agent is free again; unanswerable callers abandon.
        let actions: Vec<Action> = acd.drain_actions().collect();
        let now = clock.tick();
        let mut offered = false;
        for a in actions {
            if let Action::Offer { agent, entry, .. } = a {
                offered = true;
                handle(&mut acd, now, Event::OfferAccepted { agent, entry });
                handle(&mut acd, now, Event::CallEnded { agent });
            }
        }
        if !offered {
            handle(
                &mut acd,
                now,
                Event::Abandon {
                    entry: EntryId(next_id),
                },
            );
        }
        acd.drain_actions().for_each(drop);
    }
    report(&format!("caller arrives, ~1000 agents free [{label}]"), &h);
}

fn simulated_day() {
    let text = include_str!("../../crates/acd/examples/sim-center.toml");
    let cfg = SimConfig::from_toml_str(text).unwrap_or_else(|e| panic!("{e}"));
    let t0 = Instant::now();
    let r = sim::run(&cfg, 1).unwrap_or_else(|e| panic!("{e}"));
    let wall: Duration = t0.elapsed();
    println!(
        "simulated day, 200-agent center: {} calls, {} core inputs, wall time {:.3} s",
        r.offered,
        r.core_events,
        wall.as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    for (s, label) in [
        (Strategy::LongestIdle, "longest-idle"),
        (Strategy::BestSkill, "best-skill"),
        (Strategy::RoundRobin, "round-robin"),
        (Strategy::FewestCalls, "fewest-calls"),
    ] {
        agent_frees_up(s, label);
        caller_arrives_many_free(s, label);
    }
    simulated_day();
}
