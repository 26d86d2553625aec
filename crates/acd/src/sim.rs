//! Discrete-event simulator driving the [`Acd`] core in simulated time.
//!
//! Poisson arrivals per traffic stream, exponential handle times, exponential patience
//! (abandonment), a VIP share, callbacks offered by overflow rules, agent groups with skills.
//! Agents answer offers instantly. [`run`] returns a [`SimReport`] (printable as a table,
//! serializable to JSON) with the Erlang C / Erlang A prediction beside the measurements.

use crate::config::{AcdConfig, AgentSkill, SkillReq};
use crate::engine::Acd;
use crate::erlang::{self, Prediction};
use crate::error::AcdError;
use crate::ids::{AgentId, EntryId, QueueId};
use crate::io::{Action, AgentProfile, AgentState, Enqueue, EntryKind, EntryStatus, Event};
use crate::time::Time;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::time::Duration;

/// One stream of calls into a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficConfig {
    /// Label.
    #[serde(default)]
    pub name: String,
    /// Queue the calls join.
    pub queue: QueueId,
    /// Poisson arrival rate.
    pub calls_per_hour: f64,
    /// Mean (exponential) talk time, seconds.
    pub handle_time_s: f64,
    /// Mean (exponential) patience, seconds; absent: callers never hang up.
    #[serde(default)]
    pub patience_s: Option<f64>,
    /// Share of callers that are VIP (class `vip_class`).
    #[serde(default)]
    pub vip_share: f64,
    /// Class given to VIP callers.
    #[serde(default = "one")]
    pub vip_class: u8,
    /// Requirements of this stream's enqueue step (absent: the queue's).
    #[serde(default)]
    pub requirements: Option<Vec<SkillReq>>,
    /// Share of callers who accept a callback when an overflow rule offers one.
    #[serde(default)]
    pub callback_accept_share: f64,
    /// Probability that a callback attempt reaches the customer.
    #[serde(default = "default_cb_answer")]
    pub callback_answer_prob: f64,
    /// Time an agent spends on a failed callback attempt, seconds.
    #[serde(default = "default_cb_ring")]
    pub callback_ring_s: f64,
}

fn one() -> u8 {
    1
}
fn default_cb_answer() -> f64 {
    0.8
}
fn default_cb_ring() -> f64 {
    25.0
}
fn default_sl() -> f64 {
    20.0
}

/// A group of identical agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentGroup {
    /// Label.
    #[serde(default)]
    pub name: String,
    /// How many.
    pub count: u32,
    /// Their skills.
    #[serde(default)]
    pub skills: Vec<AgentSkill>,
    /// Queues they serve.
    pub queues: Vec<QueueId>,
    /// VIP-designated.
    #[serde(default)]
    pub vip: bool,
}

/// A simulation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// The ACD itself (queues, timeouts, …).
    #[serde(default)]
    pub acd: AcdConfig,
    /// Arrivals are generated during this many seconds; the run continues until the queues
    /// drain (at most `drain_s` more).
    pub duration_s: f64,
    /// Calls arriving before this are not measured.
    #[serde(default)]
    pub warmup_s: f64,
    /// Stop generating arrivals after this many calls (all streams together).
    #[serde(default)]
    pub max_calls: Option<u64>,
    /// Service-level threshold, seconds.
    #[serde(default = "default_sl")]
    pub service_level_s: f64,
    /// Longest drain after the arrival window, seconds.
    #[serde(default = "default_drain")]
    pub drain_s: f64,
    /// Use `1 − u` for every uniform draw of the call streams (the antithetic twin of the
    /// run with the same seed). Averaging a run and its twin is a standard variance-reduction
    /// technique; used by the Erlang C agreement tests.
    #[serde(default)]
    pub antithetic: bool,
    /// Call streams.
    pub traffic: Vec<TrafficConfig>,
    /// Staffing.
    pub agents: Vec<AgentGroup>,
}

fn default_drain() -> f64 {
    4.0 * 3600.0
}

impl SimConfig {
    /// Parses a TOML document.
    pub fn from_toml_str(s: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(s)
    }
}

/// Theory beside the measurement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Theory {
    /// The prediction (pooled: total arrival rate, mean handle time incl. wrap-up, all agents).
    pub prediction: Prediction,
    /// Whether the model's assumptions hold for this configuration (one stream, one queue,
    /// every agent eligible, no VIP, callbacks or overflow); otherwise it is a rough pooled
    /// reference only.
    pub exact: bool,
}

/// What a simulation measured. Rates are fractions (0..1), times seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    /// Seed used.
    pub seed: u64,
    /// Simulated seconds (arrival window plus drain).
    pub simulated_s: f64,
    /// Agents logged in.
    pub agents: u32,
    /// Measured calls offered (arrived after warm-up).
    pub offered: u64,
    /// Live calls answered.
    pub answered: u64,
    /// … of which within the service-level threshold.
    pub answered_within_sl: u64,
    /// Callers who hung up while waiting.
    pub abandoned: u64,
    /// Callers sent to voicemail by overflow.
    pub voicemail: u64,
    /// Callers who accepted a callback.
    pub callbacks_accepted: u64,
    /// Callbacks that reached the customer.
    pub callbacks_completed: u64,
    /// Callbacks given up.
    pub callbacks_exhausted: u64,
    /// Calls still unresolved when the drain limit was reached.
    pub unresolved: u64,
    /// Service-level threshold, seconds.
    pub service_level_s: f64,
    /// answered within threshold / offered resolved (answered + abandoned + voicemail +
    /// callbacks accepted).
    pub service_level: f64,
    /// Average speed of answer (mean wait of answered live calls).
    pub asa_s: f64,
    /// Abandoned / offered resolved.
    pub abandon_rate: f64,
    /// Mean wait of answered VIP calls.
    pub vip_asa_s: f64,
    /// Answered VIP calls.
    pub vip_answered: u64,
    /// Mean wait of answered regular calls.
    pub regular_asa_s: f64,
    /// Longest wait of an answered call.
    pub max_wait_s: f64,
    /// Mean delay from first enqueue to a completed callback.
    pub callback_delay_s: f64,
    /// Busy time (talk + wrap-up) / (agents × simulated time).
    pub occupancy: f64,
    /// Mean absolute error of the core's estimated wait (at arrival) vs the actual wait.
    pub ewt_mae_s: f64,
    /// Same for app_queue's holdtime moving average (`h ← (3h + wait)/4`), the baseline.
    pub ewt_mae_app_queue_s: f64,
    /// Inputs handed to the core.
    pub core_events: u64,
    /// Measured arrivals per second actually drawn (offered / measured arrival window).
    pub realized_arrival_rate: f64,
    /// Mean talk time actually drawn for answered measured calls, seconds.
    pub realized_handle_time_s: f64,
    /// Erlang C (infinite patience) or Erlang A (exponential patience).
    pub theory: Option<Theory>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Arrival { stream: usize },
    Abandon { entry: EntryId },
    CallEnd { agent: AgentId },
    CallbackResult { agent: AgentId, ok: bool },
}

#[derive(Debug)]
struct Call {
    arrived: Time,
    stream: usize,
    vip: bool,
    measured: bool,
    ewt: Option<f64>,
    ewt_app_queue: f64,
    handle_s: f64,
    accepts_callback: bool,
}

#[derive(Debug, Default)]
struct Stats {
    offered: u64,
    answered: u64,
    within: u64,
    abandoned: u64,
    voicemail: u64,
    cb_accepted: u64,
    cb_completed: u64,
    cb_exhausted: u64,
    wait_sum: f64,
    vip_wait: f64,
    vip_n: u64,
    reg_wait: f64,
    reg_n: u64,
    max_wait: f64,
    cb_delay: f64,
    ewt_err: f64,
    ewt_n: u64,
    appq_err: f64,
    busy_s: f64,
    ht_sum: f64,
    ht_n: u64,
}

/// A uniform draw in [0, 1), mirrored (1 − u) for the antithetic run.
fn unif(rng: &mut StdRng, antithetic: bool) -> f64 {
    let u: f64 = rng.random();
    if antithetic {
        (1.0 - u).min(1.0 - f64::EPSILON)
    } else {
        u
    }
}

/// Exponential by inverse transform from a uniform `u` in [0, 1).
fn exp_from(u: f64, mean: f64) -> f64 {
    -mean * (1.0 - u).ln()
}

/// Per-stream random sources, so that runs stay synchronized draw by draw (needed for
/// antithetic pairs): inter-arrival times, and the attributes of each call drawn at arrival.
#[derive(Debug)]
struct StreamRng {
    arrivals: StdRng,
    calls: StdRng,
}

struct Sim<'a> {
    cfg: &'a SimConfig,
    acd: Acd,
    rng: StdRng,
    streams: Vec<StreamRng>,
    antithetic: bool,
    heap: BinaryHeap<Reverse<(Time, u64, Ev)>>,
    seq: u64,
    calls: HashMap<EntryId, Call>,
    /// agent -> (entry, stream, answered at)
    serving: HashMap<AgentId, (EntryId, usize)>,
    app_queue_hold: HashMap<QueueId, f64>,
    stats: Stats,
    next_entry: u64,
    arrivals: u64,
    end_arrivals: Time,
    warmup: Time,
    events: u64,
    wrap: HashMap<QueueId, f64>,
}

impl Sim<'_> {
    fn push(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, ev)));
    }

    fn input(&mut self, now: Time, ev: Event) -> Result<(), AcdError> {
        self.events += 1;
        self.acd.handle(now, ev)?;
        while let Some(a) = self.acd.poll_action() {
            self.react(now, a)?;
        }
        Ok(())
    }

    fn react(&mut self, now: Time, a: Action) -> Result<(), AcdError> {
        match a {
            Action::Offer {
                entry,
                agent,
                kind,
                queue,
            } => {
                // Robustness: only answer offers that are still ringing.
                if self.acd.agent_state(agent) != (AgentState::Offered { entry }) {
                    return Ok(());
                }
                self.events += 1;
                self.acd
                    .handle(now, Event::OfferAccepted { agent, entry })?;
                let Some(call) = self.calls.get(&entry) else {
                    return Ok(());
                };
                let stream = call.stream;
                let t = &self.cfg.traffic[stream];
                let wait = now.saturating_since(call.arrived).as_secs_f64();
                self.serving.insert(agent, (entry, stream));
                match kind {
                    EntryKind::Live => {
                        let h = self.app_queue_hold.entry(queue).or_insert(0.0);
                        let appq_estimate = call.ewt_app_queue;
                        *h = (3.0 * *h + wait) / 4.0;
                        if call.measured {
                            let s = &mut self.stats;
                            s.answered += 1;
                            s.wait_sum += wait;
                            s.max_wait = s.max_wait.max(wait);
                            if wait <= self.cfg.service_level_s {
                                s.within += 1;
                            }
                            if call.vip {
                                s.vip_wait += wait;
                                s.vip_n += 1;
                            } else {
                                s.reg_wait += wait;
                                s.reg_n += 1;
                            }
                            if let Some(e) = call.ewt {
                                s.ewt_err += (e - wait).abs();
                                s.appq_err += (appq_estimate - wait).abs();
                                s.ewt_n += 1;
                            }
                        }
                        let ht = call.handle_s;
                        self.stats.busy_s += ht + self.wrap.get(&queue).copied().unwrap_or(0.0);
                        if call.measured {
                            self.stats.ht_sum += ht;
                            self.stats.ht_n += 1;
                        }
                        self.push(now + Duration::from_secs_f64(ht), Ev::CallEnd { agent });
                    }
                    EntryKind::Callback { .. } => {
                        let ok = self.rng.random::<f64>() < t.callback_answer_prob;
                        let d = if ok { 0.0 } else { t.callback_ring_s };
                        self.stats.busy_s += d;
                        self.push(
                            now + Duration::from_secs_f64(d),
                            Ev::CallbackResult { agent, ok },
                        );
                    }
                }
            }
            Action::OfferCallback { entry } => {
                let Some(call) = self.calls.get(&entry) else {
                    return Ok(());
                };
                let waiting_live = self
                    .acd
                    .entry(entry)
                    .is_some_and(|e| e.kind == EntryKind::Live && e.status == EntryStatus::Waiting);
                if call.accepts_callback && waiting_live {
                    if call.measured {
                        self.stats.cb_accepted += 1;
                    }
                    self.events += 1;
                    self.acd.handle(now, Event::ConvertToCallback { entry })?;
                }
            }
            Action::Voicemail { entry } => {
                if self.calls.remove(&entry).is_some_and(|c| c.measured) {
                    self.stats.voicemail += 1;
                }
            }
            Action::CallbackExhausted { entry } => {
                if self.calls.remove(&entry).is_some_and(|c| c.measured) {
                    self.stats.cb_exhausted += 1;
                }
            }
            Action::CancelOffer { .. }
            | Action::Announce { .. }
            | Action::Promoted { .. }
            | Action::Widened { .. }
            | Action::Moved { .. }
            | Action::AgentStateChanged { .. } => {}
        }
        Ok(())
    }

    fn arrival(&mut self, now: Time, stream: usize) -> Result<(), AcdError> {
        let t = &self.cfg.traffic[stream];
        // next arrival of this stream
        let rate = t.calls_per_hour / 3600.0;
        let anti = self.antithetic;
        let Some(rngs) = self.streams.get_mut(stream) else {
            return Ok(());
        };
        let next =
            now + Duration::from_secs_f64(exp_from(unif(&mut rngs.arrivals, anti), 1.0 / rate));
        // Every attribute is drawn for every call, used or not, to keep streams in step.
        let (vip_u, handle_u, patience_u, callback_u) = (
            unif(&mut rngs.calls, anti),
            unif(&mut rngs.calls, anti),
            unif(&mut rngs.calls, anti),
            unif(&mut rngs.calls, anti),
        );
        self.arrivals += 1;
        let more = self.cfg.max_calls.is_none_or(|m| self.arrivals < m);
        if next < self.end_arrivals && more {
            self.push(next, Ev::Arrival { stream });
        }
        self.next_entry += 1;
        let id = EntryId(self.next_entry);
        let vip = vip_u < t.vip_share;
        let measured = now >= self.warmup;
        let patience = t.patience_s.map(|p| exp_from(patience_u, p));
        let handle_s = exp_from(handle_u, t.handle_time_s);
        let accepts_callback = callback_u < t.callback_accept_share;
        let (queue, requirements, vip_class) = (t.queue, t.requirements.clone(), t.vip_class);
        if measured {
            self.stats.offered += 1;
        }
        let ewt_app_queue = self.app_queue_hold.get(&queue).copied().unwrap_or(0.0);
        self.calls.insert(
            id,
            Call {
                arrived: now,
                stream,
                vip,
                measured,
                ewt: None,
                ewt_app_queue,
                handle_s,
                accepts_callback,
            },
        );
        let enq = Enqueue {
            entry: id,
            queue,
            class: if vip { vip_class } else { 0 },
            kind: EntryKind::Live,
            requirements,
            enqueued_at: None,
        };
        self.events += 1;
        self.acd.handle(now, Event::Enqueue(enq))?;
        // The estimate the caller would hear on arrival.
        let ewt = match self.acd.entry(id).map(|e| e.status) {
            Some(EntryStatus::Waiting) => self.acd.estimated_wait(id).map(|d| d.as_secs_f64()),
            _ => Some(0.0),
        };
        if let Some(c) = self.calls.get_mut(&id) {
            c.ewt = ewt;
        }
        while let Some(a) = self.acd.poll_action() {
            self.react(now, a)?;
        }
        if let Some(p) = patience {
            self.push(now + Duration::from_secs_f64(p), Ev::Abandon { entry: id });
        }
        Ok(())
    }

    fn step(&mut self, now: Time, ev: Ev) -> Result<(), AcdError> {
        match ev {
            Ev::Arrival { stream } => self.arrival(now, stream)?,
            Ev::Abandon { entry } => {
                let live_waiting = self.acd.entry(entry).is_some_and(|e| {
                    e.kind == EntryKind::Live && !matches!(e.status, EntryStatus::InService { .. })
                });
                if live_waiting {
                    self.input(now, Event::Abandon { entry })?;
                    if self.calls.remove(&entry).is_some_and(|c| c.measured) {
                        self.stats.abandoned += 1;
                    }
                }
            }
            Ev::CallEnd { agent } => {
                if let Some((entry, _)) = self.serving.remove(&agent) {
                    if let Some(c) = self.calls.remove(&entry) {
                        let is_cb = self
                            .acd
                            .entry(entry)
                            .is_some_and(|e| matches!(e.kind, EntryKind::Callback { .. }));
                        if is_cb && c.measured {
                            self.stats.cb_completed += 1;
                            self.stats.cb_delay += now.saturating_since(c.arrived).as_secs_f64();
                        }
                    }
                }
                self.input(now, Event::CallEnded { agent })?;
            }
            Ev::CallbackResult { agent, ok } => {
                if ok {
                    let ht = self
                        .serving
                        .get(&agent)
                        .and_then(|(e, _)| self.calls.get(e))
                        .map_or(0.0, |c| c.handle_s);
                    self.stats.busy_s += ht;
                    self.push(now + Duration::from_secs_f64(ht), Ev::CallEnd { agent });
                } else {
                    self.serving.remove(&agent);
                    self.input(now, Event::CallbackFailed { agent })?;
                }
            }
        }
        Ok(())
    }
}

fn validate(cfg: &SimConfig) -> Result<(), AcdError> {
    let pos = |f: &'static str, x: f64| {
        if x.is_finite() && x > 0.0 {
            Ok(())
        } else {
            Err(AcdError::InvalidConfig(f))
        }
    };
    let share = |f: &'static str, x: f64| {
        if (0.0..=1.0).contains(&x) {
            Ok(())
        } else {
            Err(AcdError::InvalidConfig(f))
        }
    };
    pos("duration_s", cfg.duration_s)?;
    pos("service_level_s", cfg.service_level_s)?;
    if !(cfg.warmup_s.is_finite() && cfg.warmup_s >= 0.0) {
        return Err(AcdError::InvalidConfig("warmup_s"));
    }
    if !(cfg.drain_s.is_finite() && cfg.drain_s >= 0.0) {
        return Err(AcdError::InvalidConfig("drain_s"));
    }
    for t in &cfg.traffic {
        pos("traffic.calls_per_hour", t.calls_per_hour)?;
        pos("traffic.handle_time_s", t.handle_time_s)?;
        if let Some(p) = t.patience_s {
            pos("traffic.patience_s", p)?;
        }
        share("traffic.vip_share", t.vip_share)?;
        share("traffic.callback_accept_share", t.callback_accept_share)?;
        share("traffic.callback_answer_prob", t.callback_answer_prob)?;
        if !(t.callback_ring_s.is_finite() && t.callback_ring_s >= 0.0) {
            return Err(AcdError::InvalidConfig("traffic.callback_ring_s"));
        }
    }
    Ok(())
}

fn theory(cfg: &SimConfig) -> Option<Theory> {
    let lambda: f64 = cfg.traffic.iter().map(|t| t.calls_per_hour / 3600.0).sum();
    let agents: u32 = cfg.agents.iter().map(|g| g.count).sum();
    if lambda <= 0.0 || agents == 0 {
        return None;
    }
    let wrap = |q: QueueId| {
        cfg.acd
            .queues
            .iter()
            .find(|c| c.id == q)
            .map_or(0.0, |c| c.wrap_up_s)
    };
    let aht: f64 = cfg
        .traffic
        .iter()
        .map(|t| t.calls_per_hour / 3600.0 / lambda * (t.handle_time_s + wrap(t.queue)))
        .sum();
    let patience: Vec<f64> = cfg.traffic.iter().filter_map(|t| t.patience_s).collect();
    let prediction = if patience.is_empty() {
        erlang::erlang_c(agents, lambda, aht, cfg.service_level_s)?
    } else {
        let mean = patience.iter().sum::<f64>() / patience.len() as f64;
        erlang::erlang_a(agents, lambda, aht, mean, cfg.service_level_s)?
    };
    let exact = match cfg.traffic.as_slice() {
        [t] => {
            let q = cfg.acd.queues.iter().find(|c| c.id == t.queue);
            let reqs = t
                .requirements
                .clone()
                .or_else(|| q.map(|q| q.requirements.clone()))
                .unwrap_or_default();
            (patience.is_empty() || patience.len() == 1)
                && t.vip_share == 0.0
                && t.callback_accept_share == 0.0
                && q.is_some_and(|q| q.overflow.is_empty() && q.vip_reserve_s.is_none())
                && cfg.agents.iter().all(|g| {
                    g.queues.contains(&t.queue)
                        && reqs.iter().all(|r| {
                            r.min_level == 0
                                || g.skills
                                    .iter()
                                    .any(|s| s.skill == r.skill && s.level >= r.min_level)
                        })
                })
        }
        _ => false,
    };
    Some(Theory { prediction, exact })
}

/// Runs a simulation. Deterministic for a given `seed`.
pub fn run(cfg: &SimConfig, seed: u64) -> Result<SimReport, AcdError> {
    validate(cfg)?;
    let acd = Acd::new(&cfg.acd)?;
    let end_arrivals = Time::from_secs_f64(cfg.duration_s);
    let mut sim = Sim {
        cfg,
        acd,
        rng: StdRng::seed_from_u64(seed ^ 0x5eed_0000_0000_0001),
        streams: (0..cfg.traffic.len() as u64)
            .map(|i| StreamRng {
                arrivals: StdRng::seed_from_u64(
                    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (2 * i + 1),
                ),
                calls: StdRng::seed_from_u64(
                    seed.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (2 * i + 2),
                ),
            })
            .collect(),
        antithetic: cfg.antithetic,
        heap: BinaryHeap::new(),
        seq: 0,
        calls: HashMap::new(),
        serving: HashMap::new(),
        app_queue_hold: HashMap::new(),
        stats: Stats::default(),
        next_entry: 0,
        arrivals: 0,
        end_arrivals,
        warmup: Time::from_secs_f64(cfg.warmup_s),
        events: 0,
        wrap: cfg.acd.queues.iter().map(|q| (q.id, q.wrap_up_s)).collect(),
    };
    let mut n = 0u32;
    for g in &cfg.agents {
        for _ in 0..g.count {
            n += 1;
            let profile = AgentProfile {
                skills: g.skills.clone(),
                queues: g.queues.clone(),
                vip: g.vip,
            };
            sim.input(
                Time::ZERO,
                Event::AgentLogin {
                    agent: AgentId(n),
                    profile,
                },
            )?;
        }
    }
    for (i, t) in cfg.traffic.iter().enumerate() {
        let anti = sim.antithetic;
        let Some(rngs) = sim.streams.get_mut(i) else {
            continue;
        };
        let first = exp_from(unif(&mut rngs.arrivals, anti), 3600.0 / t.calls_per_hour);
        let at = Time::from_secs_f64(first);
        if at < end_arrivals {
            sim.push(at, Ev::Arrival { stream: i });
        }
    }
    let hard_end = end_arrivals + Duration::from_secs_f64(cfg.drain_s);
    let mut now = Time::ZERO;
    loop {
        let next_ev = sim.heap.peek().map(|Reverse((t, _, _))| *t);
        let next_core = sim.acd.next_deadline();
        let core_first = match (next_ev, next_core) {
            (None, None) => break,
            (Some(e), Some(c)) => c <= e,
            (None, Some(_)) => true,
            (Some(_), None) => false,
        };
        if core_first {
            let t = next_core.unwrap_or(now).max(now);
            if t > hard_end || (next_ev.is_none() && sim.calls.is_empty()) {
                break;
            }
            now = t;
            sim.input(now, Event::Tick)?;
        } else if let Some(Reverse((t, _, ev))) = sim.heap.pop() {
            if t > hard_end {
                break;
            }
            now = t.max(now);
            sim.step(now, ev)?;
        }
    }
    let s = &sim.stats;
    let resolved = s.answered + s.abandoned + s.voicemail + s.cb_accepted;
    let unresolved = sim.calls.values().filter(|c| c.measured).count() as u64;
    let div = |a: f64, b: u64| if b == 0 { 0.0 } else { a / b as f64 };
    let simulated_s = now.as_secs_f64();
    Ok(SimReport {
        seed,
        simulated_s,
        agents: n,
        offered: s.offered,
        answered: s.answered,
        answered_within_sl: s.within,
        abandoned: s.abandoned,
        voicemail: s.voicemail,
        callbacks_accepted: s.cb_accepted,
        callbacks_completed: s.cb_completed,
        callbacks_exhausted: s.cb_exhausted,
        unresolved,
        service_level_s: cfg.service_level_s,
        service_level: div(s.within as f64, resolved),
        asa_s: div(s.wait_sum, s.answered),
        abandon_rate: div(s.abandoned as f64, resolved),
        vip_asa_s: div(s.vip_wait, s.vip_n),
        vip_answered: s.vip_n,
        regular_asa_s: div(s.reg_wait, s.reg_n),
        max_wait_s: s.max_wait,
        callback_delay_s: div(s.cb_delay, s.cb_completed),
        occupancy: if n == 0 || simulated_s <= 0.0 {
            0.0
        } else {
            s.busy_s / (f64::from(n) * simulated_s)
        },
        ewt_mae_s: div(s.ewt_err, s.ewt_n),
        ewt_mae_app_queue_s: div(s.appq_err, s.ewt_n),
        core_events: sim.events,
        realized_arrival_rate: {
            let window = cfg.duration_s - cfg.warmup_s;
            if window > 0.0 {
                s.offered as f64 / window
            } else {
                0.0
            }
        },
        realized_handle_time_s: div(s.ht_sum, s.ht_n),
        theory: theory(cfg),
    })
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |x: f64| format!("{:.2} %", 100.0 * x);
        let secs = |x: f64| format!("{x:.1} s");
        writeln!(
            f,
            "Simulation (seed {}): {} agents, {:.0} s simulated, {} core inputs",
            self.seed, self.agents, self.simulated_s, self.core_events
        )?;
        writeln!(
            f,
            "  calls offered {:>10}   answered {:>10}   abandoned {:>8}   voicemail {:>6}",
            self.offered, self.answered, self.abandoned, self.voicemail
        )?;
        writeln!(
            f,
            "  callbacks accepted {:>5}   completed {:>9}   exhausted {:>8}   unresolved {:>5}",
            self.callbacks_accepted,
            self.callbacks_completed,
            self.callbacks_exhausted,
            self.unresolved
        )?;
        writeln!(f)?;
        let th = self.theory.map(|t| t.prediction);
        let model = match self.theory {
            None => "theory (n/a)".to_string(),
            Some(t) => format!(
                "{}{}",
                match t.prediction.model {
                    erlang::Model::ErlangC => "Erlang C",
                    erlang::Model::ErlangA => "Erlang A",
                },
                if t.exact { "" } else { " (pooled, approx.)" }
            ),
        };
        writeln!(f, "  {:<34} {:>14} {:>24}", "metric", "simulated", model)?;
        writeln!(f, "  {}", "-".repeat(74))?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, sim: String, th: Option<String>| {
            writeln!(
                f,
                "  {:<34} {:>14} {:>24}",
                name,
                sim,
                th.unwrap_or_else(|| "-".into())
            )
        };
        row(
            f,
            &format!("service level ({} s)", self.service_level_s),
            pct(self.service_level),
            th.map(|p| pct(p.service_level)),
        )?;
        row(
            f,
            "average speed of answer",
            secs(self.asa_s),
            th.map(|p| secs(p.asa_s)),
        )?;
        row(
            f,
            "abandonment",
            pct(self.abandon_rate),
            th.map(|p| pct(p.abandon_rate)),
        )?;
        row(
            f,
            "occupancy",
            pct(self.occupancy),
            th.map(|p| pct(p.occupancy)),
        )?;
        row(
            f,
            &format!("VIP wait ({} answered)", self.vip_answered),
            secs(self.vip_asa_s),
            None,
        )?;
        row(f, "regular wait", secs(self.regular_asa_s), None)?;
        row(f, "longest wait", secs(self.max_wait_s), None)?;
        row(f, "callback delay", secs(self.callback_delay_s), None)?;
        row(f, "EWT error (ours, mean abs)", secs(self.ewt_mae_s), None)?;
        row(
            f,
            "EWT error (app_queue holdtime)",
            secs(self.ewt_mae_app_queue_s),
            None,
        )?;
        Ok(())
    }
}
