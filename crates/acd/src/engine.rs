//! The ACD state machine.

use crate::config::{AcdConfig, AgentSkill, OverflowAction, SkillReq, Strategy};
use crate::error::AcdError;
use crate::hash::IdMap;
use crate::ids::{AgentId, EntryId, QueueId, WrapUpCode};
use crate::io::{
    Action, AgentProfile, AgentState, CancelReason, Enqueue, EntryKind, EntryStatus, EntryView,
    Event, PauseReason,
};
use crate::time::Time;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

/// Order key of a waiting entry: (255 − class, original enqueue time, sequence, id).
/// Smaller is served first.
type Key = (u8, Time, u64, EntryId);
/// Strategy key of a free agent in one queue; smaller is chosen first.
type FreeKey = (u64, u64, AgentId);
type ProfileIdx = usize;

const SKILL_MAX: u8 = 10;

fn secs(field: &'static str, s: f64) -> Result<Duration, AcdError> {
    if (0.0..1e12).contains(&s) {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(AcdError::InvalidConfig(field))
    }
}

fn opt_secs(field: &'static str, s: Option<f64>) -> Result<Option<Duration>, AcdError> {
    s.map(|s| secs(field, s)).transpose()
}

fn check_reqs(reqs: &[SkillReq]) -> Result<(), AcdError> {
    for r in reqs {
        if r.min_level > SKILL_MAX {
            return Err(AcdError::InvalidSkillLevel {
                skill: r.skill,
                level: r.min_level,
            });
        }
    }
    Ok(())
}

/// Canonical form of a requirement list: sorted by skill, one (the highest) level per skill,
/// level-0 requirements dropped.
fn normalize(reqs: &[SkillReq]) -> Vec<SkillReq> {
    let mut v: Vec<SkillReq> = reqs.iter().copied().filter(|r| r.min_level > 0).collect();
    v.sort_by(|a, b| a.skill.cmp(&b.skill).then(b.min_level.cmp(&a.min_level)));
    v.dedup_by_key(|r| r.skill);
    v
}

fn level_of(skills: &[AgentSkill], r: &SkillReq) -> Option<u8> {
    skills
        .binary_search_by_key(&r.skill, |s| s.skill)
        .ok()
        .and_then(|i| skills.get(i))
        .map(|s| s.level)
}

fn meets(skills: &[AgentSkill], reqs: &[SkillReq]) -> bool {
    reqs.iter()
        .all(|r| level_of(skills, r).is_some_and(|l| l >= r.min_level))
}

/// Cached eligibility of an agent for a requirement profile.
fn eligible(
    elig: &mut Vec<u8>,
    skills: &[AgentSkill],
    profiles: &[Vec<SkillReq>],
    p: ProfileIdx,
) -> bool {
    if elig.len() <= p {
        elig.resize(profiles.len().max(p + 1), 0);
    }
    match elig[p] {
        1 => true,
        2 => false,
        _ => {
            let ok = profiles.get(p).is_some_and(|reqs| meets(skills, reqs));
            elig[p] = if ok { 1 } else { 2 };
            ok
        }
    }
}

#[derive(Debug)]
struct Settings {
    offer_timeout: Option<Duration>,
    max_no_answer: u32,
    vip_class: u8,
    max_class: u8,
    callback_max_attempts: u32,
    alpha: f64,
}

#[derive(Debug, Default)]
struct Bucket {
    open: BTreeSet<Key>,
    reserved: BTreeSet<Key>,
}

#[derive(Debug)]
struct Queue {
    id: QueueId,
    strategy: Strategy,
    profile: ProfileIdx,
    wrap_up: Duration,
    promote_after: Option<Duration>,
    max_promotions: u8,
    vip_reserve: Option<Duration>,
    announce_every: Option<Duration>,
    overflow: Vec<(Duration, OverflowAction)>,
    buckets: Vec<Bucket>,
    free: BTreeSet<FreeKey>,
    members: BTreeSet<AgentId>,
    rr_cursor: u64,
    next_rank: u64,
    /// Moving average of handle time (answer → end of wrap-up), seconds.
    aht_s: f64,
    /// Entries waiting in this queue.
    waiting_n: usize,
    /// Last departure from the waiting set, and whether entries were left waiting after it.
    last_departure: Option<(Time, bool)>,
    /// Moving average of the interval between departures while the queue stays backlogged.
    departure_interval_s: Option<f64>,
}

impl Queue {
    fn bucket(&mut self, p: ProfileIdx) -> &mut Bucket {
        if self.buckets.len() <= p {
            self.buckets.resize_with(p + 1, Bucket::default);
        }
        &mut self.buckets[p]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Available,
    Offered { entry: EntryId },
    OnCall { entry: EntryId },
    WrapUp { code: Option<WrapUpCode> },
    Paused { reason: PauseReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    Pause(PauseReason),
    Logout,
}

#[derive(Debug)]
struct Agent {
    skills: Vec<AgentSkill>,
    /// (queue index, member rank in that queue)
    queues: Vec<(usize, u64)>,
    vip: bool,
    status: Status,
    epoch: u64,
    idle_since: Time,
    calls: u64,
    no_answer: u32,
    pending: Pending,
    elig: Vec<u8>,
    call_started: Time,
    call_queue: usize,
}

#[derive(Debug)]
struct Entry {
    kind: EntryKind,
    queue: usize,
    profile: ProfileIdx,
    vip: bool,
    class: u8,
    promotions: u8,
    enqueued_at: Time,
    queue_entered_at: Time,
    seq: u64,
    status: EntryStatus,
    reserved: bool,
    epoch: u64,
}

impl Entry {
    fn key(&self, id: EntryId) -> Key {
        (u8::MAX - self.class, self.enqueued_at, self.seq, id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    OfferTimeout {
        agent: AgentId,
        epoch: u64,
    },
    WrapUpEnd {
        agent: AgentId,
        epoch: u64,
    },
    Promote {
        entry: EntryId,
        epoch: u64,
    },
    VipWiden {
        entry: EntryId,
        epoch: u64,
    },
    Overflow {
        entry: EntryId,
        epoch: u64,
        step: usize,
    },
    Announce {
        entry: EntryId,
        epoch: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    at: Time,
    seq: u64,
    kind: TimerKind,
}

/// The sans-IO ACD core. Feed it inputs with [`Acd::handle`], drain [`Action`]s with
/// [`Acd::poll_action`], and call [`Acd::handle`] with [`Event::Tick`] at
/// [`Acd::next_deadline`].
#[derive(Debug)]
pub struct Acd {
    settings: Settings,
    queues: Vec<Queue>,
    queue_index: IdMap<QueueId, usize>,
    agents: IdMap<AgentId, Agent>,
    entries: IdMap<EntryId, Entry>,
    profiles: Vec<Vec<SkillReq>>,
    profile_index: HashMap<Vec<SkillReq>, ProfileIdx>,
    timers: BinaryHeap<Reverse<Timer>>,
    actions: VecDeque<Action>,
    now: Time,
    seq: u64,
    timer_seq: u64,
    dirty_agents: Vec<AgentId>,
    dirty_entries: Vec<EntryId>,
    self_check: bool,
    violations: Vec<String>,
}

impl Acd {
    /// Builds the core from its configuration.
    pub fn new(config: &AcdConfig) -> Result<Self, AcdError> {
        let alpha = config.handle_time_alpha;
        if !(alpha > 0.0 && alpha <= 1.0) {
            return Err(AcdError::InvalidConfig("handle_time_alpha"));
        }
        let prior = secs("handle_time_prior_s", config.handle_time_prior_s)?.as_secs_f64();
        let settings = Settings {
            offer_timeout: opt_secs("offer_timeout_s", config.offer_timeout_s)?,
            max_no_answer: config.max_no_answer,
            vip_class: config.vip_class,
            max_class: config.max_class,
            callback_max_attempts: config.callback_max_attempts.max(1),
            alpha,
        };
        let mut acd = Acd {
            settings,
            queues: Vec::new(),
            queue_index: IdMap::default(),
            agents: IdMap::default(),
            entries: IdMap::default(),
            profiles: Vec::new(),
            profile_index: HashMap::new(),
            timers: BinaryHeap::new(),
            actions: VecDeque::new(),
            now: Time::ZERO,
            seq: 0,
            timer_seq: 0,
            dirty_agents: Vec::new(),
            dirty_entries: Vec::new(),
            self_check: false,
            violations: Vec::new(),
        };
        for q in &config.queues {
            if acd.queue_index.contains_key(&q.id) {
                return Err(AcdError::DuplicateQueue(q.id));
            }
            check_reqs(&q.requirements)?;
            let mut overflow = Vec::new();
            for r in &q.overflow {
                let after = secs("overflow.after_s", r.after_s)?;
                if let OverflowAction::MoveTo { queue } = r.action {
                    if !config.queues.iter().any(|c| c.id == queue) {
                        return Err(AcdError::UnknownQueue(queue));
                    }
                }
                overflow.push((after, r.action.clone()));
            }
            overflow.sort_by_key(|(d, _)| *d);
            let profile = acd.intern(&q.requirements);
            let promote_after = opt_secs("promote_after_s", q.promote_after_s)?;
            if promote_after.is_some_and(|d| d.is_zero()) {
                return Err(AcdError::InvalidConfig("promote_after_s"));
            }
            let announce_every = opt_secs("announce_every_s", q.announce_every_s)?;
            if announce_every.is_some_and(|d| d.is_zero()) {
                return Err(AcdError::InvalidConfig("announce_every_s"));
            }
            acd.queue_index.insert(q.id, acd.queues.len());
            acd.queues.push(Queue {
                id: q.id,
                strategy: q.strategy,
                profile,
                wrap_up: secs("wrap_up_s", q.wrap_up_s)?,
                promote_after,
                max_promotions: q.max_promotions,
                vip_reserve: opt_secs("vip_reserve_s", q.vip_reserve_s)?,
                announce_every,
                overflow,
                buckets: Vec::new(),
                free: BTreeSet::new(),
                members: BTreeSet::new(),
                rr_cursor: 0,
                next_rank: 1,
                aht_s: prior,
                waiting_n: 0,
                last_departure: None,
                departure_interval_s: None,
            });
        }
        Ok(acd)
    }

    // ------------------------------------------------------------------ public queries

    /// The next time at which [`Event::Tick`] has work to do (may be stale: ticking then is
    /// harmless).
    pub fn next_deadline(&self) -> Option<Time> {
        self.timers.peek().map(|Reverse(t)| t.at)
    }

    /// Next pending output.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// All pending outputs.
    pub fn drain_actions(&mut self) -> impl Iterator<Item = Action> + '_ {
        self.actions.drain(..)
    }

    /// The time of the latest input.
    pub fn now(&self) -> Time {
        self.now
    }

    /// An agent's state.
    pub fn agent_state(&self, agent: AgentId) -> AgentState {
        match self.agents.get(&agent) {
            None => AgentState::LoggedOut,
            Some(a) => public_state(a.status),
        }
    }

    /// Calls taken by an agent since login.
    pub fn agent_calls(&self, agent: AgentId) -> Option<u64> {
        self.agents.get(&agent).map(|a| a.calls)
    }

    /// Logged-in agents.
    pub fn agents(&self) -> impl Iterator<Item = AgentId> + '_ {
        self.agents.keys().copied()
    }

    /// A known entry (waiting, ringing or in service).
    pub fn entry(&self, entry: EntryId) -> Option<EntryView> {
        self.entries.get(&entry).map(|e| EntryView {
            queue: self.queues[e.queue].id,
            class: e.class,
            enqueued_at: e.enqueued_at,
            kind: e.kind,
            status: e.status,
        })
    }

    /// All known entries.
    pub fn entries(&self) -> impl Iterator<Item = EntryId> + '_ {
        self.entries.keys().copied()
    }

    /// Number of entries waiting (not ringing, not in service) in a queue.
    pub fn waiting(&self, queue: QueueId) -> usize {
        self.queue_index.get(&queue).map_or(0, |&qi| {
            self.queues[qi]
                .buckets
                .iter()
                .map(|b| b.open.len() + b.reserved.len())
                .sum()
        })
    }

    /// Moving average handle time of a queue.
    pub fn average_handle_time(&self, queue: QueueId) -> Option<Duration> {
        let qi = *self.queue_index.get(&queue)?;
        Some(Duration::from_secs_f64(self.queues[qi].aht_s))
    }

    /// Position of a waiting entry in its queue: 1 + waiting entries of the same queue ahead of
    /// it in the service order. `None` if not waiting. Cost O(position).
    pub fn position(&self, entry: EntryId) -> Option<usize> {
        let e = self.entries.get(&entry)?;
        if e.status != EntryStatus::Waiting {
            return None;
        }
        let key = e.key(entry);
        let ahead: usize = self.queues[e.queue]
            .buckets
            .iter()
            .map(|b| b.open.range(..key).count() + b.reserved.range(..key).count())
            .sum();
        Some(ahead + 1)
    }

    /// Estimated wait of a waiting entry (see README): `position × D`, where `D` is the moving
    /// average interval between departures from the queue's waiting set while it stayed
    /// backlogged; before any such interval was observed, `position × AHT / n`, with AHT the
    /// queue's moving average handle time and `n` the logged-in, unpaused members of the queue
    /// who meet the entry's requirements. `None` if not waiting, or no interval is known and
    /// `n = 0`.
    pub fn estimated_wait(&self, entry: EntryId) -> Option<Duration> {
        let pos = self.position(entry)?;
        let e = self.entries.get(&entry)?;
        let q = &self.queues[e.queue];
        if let Some(d) = q.departure_interval_s {
            return Some(Duration::from_secs_f64(pos as f64 * d));
        }
        let reqs = self.profiles.get(e.profile)?;
        let n = q
            .members
            .iter()
            .filter_map(|a| self.agents.get(a))
            .filter(|a| {
                !matches!(a.status, Status::Paused { .. })
                    && a.pending == Pending::None
                    && meets(&a.skills, reqs)
                    && (!e.reserved || a.vip)
            })
            .count();
        if n == 0 {
            return None;
        }
        Some(Duration::from_secs_f64(pos as f64 * q.aht_s / n as f64))
    }

    // ------------------------------------------------------------------ input

    /// Handles one input at `now`. Timers due at or before `now` run first (each at its own
    /// time), then the input, then routing.
    pub fn handle(&mut self, now: Time, event: Event) -> Result<(), AcdError> {
        if now < self.now {
            return Err(AcdError::TimeWentBackwards);
        }
        self.run_timers(now);
        self.now = now;
        let r = match event {
            Event::Tick => Ok(()),
            Event::Enqueue(e) => self.enqueue(e),
            Event::Abandon { entry } => self.abandon(entry),
            Event::ConvertToCallback { entry } => self.convert(entry),
            Event::AgentLogin { agent, profile } => self.login(agent, profile),
            Event::AgentLogout { agent } => self.logout(agent),
            Event::AgentPause { agent, reason } => self.pause(agent, reason),
            Event::AgentReady { agent } => self.ready(agent),
            Event::OfferAccepted { agent, entry } => self.accept(agent, entry),
            Event::OfferRefused { agent, entry } | Event::OfferTimedOut { agent, entry } => self
                .check_offer(agent, entry)
                .map(|()| self.offer_failed(agent, entry, None)),
            Event::CallEnded { agent } => self.call_ended(agent, false),
            Event::CallbackFailed { agent } => self.call_ended(agent, true),
            Event::WrapUpEnded { agent, code } => self.wrap_up_ended(agent, code),
            Event::SetWrapUpCode { agent, code } => self.set_wrap_up_code(agent, code),
        };
        self.dispatch();
        self.prune_stale_timers();
        r
    }

    /// Drops timers at the head of the heap that can no longer do anything, so that
    /// [`Acd::next_deadline`] does not wake the host for nothing.
    fn prune_stale_timers(&mut self) {
        while let Some(Reverse(t)) = self.timers.peek() {
            let stale = match t.kind {
                TimerKind::OfferTimeout { agent, epoch }
                | TimerKind::WrapUpEnd { agent, epoch } => {
                    self.agents.get(&agent).is_none_or(|a| a.epoch != epoch)
                }
                TimerKind::VipWiden { entry, epoch } => self
                    .entries
                    .get(&entry)
                    .is_none_or(|e| e.epoch != epoch || !e.reserved),
                TimerKind::Promote { entry, epoch }
                | TimerKind::Overflow { entry, epoch, .. }
                | TimerKind::Announce { entry, epoch } => {
                    self.entries.get(&entry).is_none_or(|e| e.epoch != epoch)
                }
            };
            if !stale {
                break;
            }
            self.timers.pop();
        }
    }

    fn run_timers(&mut self, now: Time) {
        while let Some(Reverse(t)) = self.timers.peek().copied() {
            if t.at > now {
                break;
            }
            self.now = self.now.max(t.at);
            while let Some(Reverse(t2)) = self.timers.peek().copied() {
                if t2.at != t.at {
                    break;
                }
                self.timers.pop();
                self.fire(t2.kind);
            }
            self.dispatch();
        }
    }

    fn set_timer(&mut self, at: Time, kind: TimerKind) {
        self.timer_seq += 1;
        self.timers.push(Reverse(Timer {
            at,
            seq: self.timer_seq,
            kind,
        }));
    }

    fn intern(&mut self, reqs: &[SkillReq]) -> ProfileIdx {
        let v = normalize(reqs);
        if let Some(&p) = self.profile_index.get(&v) {
            return p;
        }
        let p = self.profiles.len();
        self.profiles.push(v.clone());
        self.profile_index.insert(v, p);
        p
    }

    fn emit_state(&mut self, agent: AgentId) {
        let state = self.agent_state(agent);
        self.actions
            .push_back(Action::AgentStateChanged { agent, state });
    }

    // ------------------------------------------------------------------ entries

    fn enqueue(&mut self, e: Enqueue) -> Result<(), AcdError> {
        let qi = *self
            .queue_index
            .get(&e.queue)
            .ok_or(AcdError::UnknownQueue(e.queue))?;
        if self.entries.contains_key(&e.entry) {
            return Err(AcdError::DuplicateEntry(e.entry));
        }
        if let Some(r) = &e.requirements {
            check_reqs(r)?;
        }
        let enqueued_at = e.enqueued_at.unwrap_or(self.now).min(self.now);
        let profile = match &e.requirements {
            Some(r) => self.intern(r),
            None => self.queues[qi].profile,
        };
        self.seq += 1;
        let entry = Entry {
            kind: e.kind,
            queue: qi,
            profile,
            vip: e.class >= self.settings.vip_class && e.class > 0,
            class: e.class,
            promotions: 0,
            enqueued_at,
            queue_entered_at: self.now,
            seq: self.seq,
            status: EntryStatus::Waiting,
            reserved: false,
            epoch: 0,
        };
        self.entries.insert(e.entry, entry);
        self.arm_entry(e.entry);
        self.insert_waiting(e.entry);
        Ok(())
    }

    /// Arms all per-queue-stint timers of an entry and computes its reservation.
    fn arm_entry(&mut self, id: EntryId) {
        let now = self.now;
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        e.epoch += 1;
        let epoch = e.epoch;
        let q = &self.queues[e.queue];
        e.reserved = false;
        let mut timers = Vec::new();
        if e.vip {
            if let Some(r) = q.vip_reserve {
                let until = e.queue_entered_at + r;
                if until > now {
                    e.reserved = true;
                    timers.push((until, TimerKind::VipWiden { entry: id, epoch }));
                }
            }
        }
        if let Some(p) = q.promote_after {
            if e.promotions < q.max_promotions && e.class < self.settings.max_class {
                let at = e.enqueued_at + p * u32::from(e.promotions + 1);
                timers.push((at.max(now), TimerKind::Promote { entry: id, epoch }));
            }
        }
        if let Some((after, _)) = q.overflow.first() {
            timers.push((
                e.queue_entered_at + *after,
                TimerKind::Overflow {
                    entry: id,
                    epoch,
                    step: 0,
                },
            ));
        }
        if let Some(every) = q.announce_every {
            timers.push((now + every, TimerKind::Announce { entry: id, epoch }));
        }
        for (at, k) in timers {
            self.set_timer(at, k);
        }
    }

    /// Puts a `Waiting` entry into its bucket and marks it for routing.
    fn insert_waiting(&mut self, id: EntryId) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        e.status = EntryStatus::Waiting;
        let key = e.key(id);
        let q = &mut self.queues[e.queue];
        q.waiting_n += 1;
        let b = q.bucket(e.profile);
        if e.reserved {
            b.reserved.insert(key);
        } else {
            b.open.insert(key);
        }
        self.dirty_entries.push(id);
    }

    /// Takes a `Waiting` entry out of its bucket.
    fn remove_waiting(&mut self, id: EntryId) {
        let Some(e) = self.entries.get(&id) else {
            return;
        };
        if e.status != EntryStatus::Waiting {
            return;
        }
        let key = e.key(id);
        let q = &mut self.queues[e.queue];
        let b = q.bucket(e.profile);
        if b.open.remove(&key) || b.reserved.remove(&key) {
            q.waiting_n -= 1;
        }
    }

    /// Records that an entry left queue `qi`'s waiting set for good (answered, abandoned,
    /// voicemail, moved away): feeds the departure-interval average used by the estimated wait.
    fn note_departure(&mut self, qi: usize) {
        const BETA: f64 = 0.1;
        let now = self.now;
        let q = &mut self.queues[qi];
        if let Some((last, backlogged)) = q.last_departure {
            if backlogged {
                let dt = now.saturating_since(last).as_secs_f64();
                q.departure_interval_s =
                    Some(q.departure_interval_s.map_or(dt, |m| m + BETA * (dt - m)));
            }
        }
        q.last_departure = Some((now, q.waiting_n > 0));
    }

    fn abandon(&mut self, id: EntryId) -> Result<(), AcdError> {
        let e = self.entries.get(&id).ok_or(AcdError::UnknownEntry(id))?;
        let qi = e.queue;
        match e.status {
            EntryStatus::Waiting => {
                self.remove_waiting(id);
                self.note_departure(qi);
            }
            EntryStatus::Offered { agent } => {
                self.actions.push_back(Action::CancelOffer {
                    entry: id,
                    agent,
                    reason: CancelReason::Abandoned,
                });
                self.release_offered_agent(agent, false);
            }
            EntryStatus::InService { .. } => {
                return Err(AcdError::InvalidEntryState {
                    entry: id,
                    op: "abandon while in service",
                });
            }
        }
        self.entries.remove(&id);
        Ok(())
    }

    fn convert(&mut self, id: EntryId) -> Result<(), AcdError> {
        let e = self
            .entries
            .get_mut(&id)
            .ok_or(AcdError::UnknownEntry(id))?;
        if e.kind != EntryKind::Live || e.status != EntryStatus::Waiting {
            return Err(AcdError::InvalidEntryState {
                entry: id,
                op: "convert to callback",
            });
        }
        e.kind = EntryKind::Callback { attempts: 0 };
        Ok(())
    }

    // ------------------------------------------------------------------ agents

    fn agent_err(&self, agent: AgentId, op: &'static str) -> AcdError {
        match self.agents.get(&agent) {
            None => AcdError::UnknownAgent(agent),
            Some(a) => AcdError::InvalidAgentState {
                agent,
                state: public_state(a.status).kind(),
                op,
            },
        }
    }

    fn login(&mut self, id: AgentId, profile: AgentProfile) -> Result<(), AcdError> {
        if self.agents.contains_key(&id) {
            return Err(AcdError::AgentAlreadyLoggedIn(id));
        }
        let mut skills = profile.skills.clone();
        for s in &skills {
            if s.level == 0 || s.level > SKILL_MAX {
                return Err(AcdError::InvalidSkillLevel {
                    skill: s.skill,
                    level: s.level,
                });
            }
        }
        skills.sort_by(|a, b| a.skill.cmp(&b.skill).then(b.level.cmp(&a.level)));
        skills.dedup_by_key(|s| s.skill);
        let mut qs = Vec::new();
        for q in &profile.queues {
            let qi = *self.queue_index.get(q).ok_or(AcdError::UnknownQueue(*q))?;
            if !qs.contains(&qi) {
                qs.push(qi);
            }
        }
        let queues = qs
            .into_iter()
            .map(|qi| {
                let q = &mut self.queues[qi];
                q.members.insert(id);
                let r = q.next_rank;
                q.next_rank += 1;
                (qi, r)
            })
            .collect();
        self.agents.insert(
            id,
            Agent {
                skills,
                queues,
                vip: profile.vip,
                status: Status::Paused {
                    reason: PauseReason::Code { code: 0 },
                },
                epoch: 0,
                idle_since: self.now,
                calls: 0,
                no_answer: 0,
                pending: Pending::None,
                elig: Vec::new(),
                call_started: self.now,
                call_queue: 0,
            },
        );
        self.make_available(id, true);
        Ok(())
    }

    fn free_key(q: &Queue, a: &Agent, id: AgentId, rank: u64) -> FreeKey {
        match q.strategy {
            Strategy::LongestIdle | Strategy::BestSkill => (a.idle_since.as_nanos(), 0, id),
            Strategy::FewestCalls => (a.calls, a.idle_since.as_nanos(), id),
            Strategy::RoundRobin => (rank, 0, id),
        }
    }

    /// Sets an agent's status, keeping the free sets in step.
    fn set_status(&mut self, id: AgentId, status: Status) {
        let Some(a) = self.agents.get_mut(&id) else {
            return;
        };
        let was_free = a.status == Status::Available;
        let is_free = status == Status::Available;
        if was_free && !is_free {
            for &(qi, rank) in &a.queues {
                let k = Self::free_key(&self.queues[qi], a, id, rank);
                self.queues[qi].free.remove(&k);
            }
        }
        a.status = status;
        a.epoch += 1;
        if is_free && !was_free {
            for &(qi, rank) in &a.queues {
                let k = Self::free_key(&self.queues[qi], a, id, rank);
                self.queues[qi].free.insert(k);
            }
            self.dirty_agents.push(id);
        }
        self.emit_state(id);
    }

    /// Makes an agent available (`fresh`: a new idle period starts now).
    fn make_available(&mut self, id: AgentId, fresh: bool) {
        let now = self.now;
        let Some(a) = self.agents.get_mut(&id) else {
            return;
        };
        if a.status == Status::Available {
            return; // already free: its free-set keys must not change
        }
        if fresh {
            a.idle_since = now;
        }
        self.set_status(id, Status::Available);
    }

    /// After a call/wrap-up/offer: applies a pending pause or logout, else available.
    fn settle(&mut self, id: AgentId, fresh: bool) {
        let Some(a) = self.agents.get_mut(&id) else {
            return;
        };
        let pending = std::mem::replace(&mut a.pending, Pending::None);
        match pending {
            Pending::None => self.make_available(id, fresh),
            Pending::Pause(reason) => self.set_status(id, Status::Paused { reason }),
            Pending::Logout => self.remove_agent(id),
        }
    }

    fn remove_agent(&mut self, id: AgentId) {
        if let Some(a) = self.agents.remove(&id) {
            for &(qi, rank) in &a.queues {
                if a.status == Status::Available {
                    let k = Self::free_key(&self.queues[qi], &a, id, rank);
                    self.queues[qi].free.remove(&k);
                }
                self.queues[qi].members.remove(&id);
            }
        }
        self.actions.push_back(Action::AgentStateChanged {
            agent: id,
            state: AgentState::LoggedOut,
        });
    }

    /// Withdraws an agent's outstanding offer: the entry goes back to its place.
    fn withdraw_offer(&mut self, agent: AgentId, entry: EntryId, reason: CancelReason) {
        self.actions.push_back(Action::CancelOffer {
            entry,
            agent,
            reason,
        });
        self.insert_waiting(entry);
    }

    fn logout(&mut self, id: AgentId) -> Result<(), AcdError> {
        let a = self.agents.get_mut(&id).ok_or(AcdError::UnknownAgent(id))?;
        match a.status {
            Status::OnCall { .. } => a.pending = Pending::Logout,
            Status::Offered { entry } => {
                self.withdraw_offer(id, entry, CancelReason::AgentLeft);
                self.remove_agent(id);
            }
            Status::WrapUp { .. } => {
                self.record_handle(id);
                self.remove_agent(id);
            }
            Status::Available | Status::Paused { .. } => self.remove_agent(id),
        }
        Ok(())
    }

    fn pause(&mut self, id: AgentId, reason: PauseReason) -> Result<(), AcdError> {
        let a = self.agents.get_mut(&id).ok_or(AcdError::UnknownAgent(id))?;
        match a.status {
            Status::OnCall { .. } => a.pending = Pending::Pause(reason),
            Status::Offered { entry } => {
                self.withdraw_offer(id, entry, CancelReason::AgentLeft);
                self.set_status(id, Status::Paused { reason });
            }
            Status::WrapUp { .. } => {
                a.pending = Pending::None;
                self.record_handle(id);
                self.set_status(id, Status::Paused { reason });
            }
            Status::Available | Status::Paused { .. } => {
                self.set_status(id, Status::Paused { reason })
            }
        }
        Ok(())
    }

    fn ready(&mut self, id: AgentId) -> Result<(), AcdError> {
        let a = self.agents.get_mut(&id).ok_or(AcdError::UnknownAgent(id))?;
        match a.status {
            Status::Paused { .. } => {
                a.no_answer = 0;
                self.make_available(id, true);
            }
            Status::WrapUp { .. } => {
                a.pending = Pending::None;
                self.record_handle(id);
                self.make_available(id, true);
            }
            Status::OnCall { .. } => {
                if matches!(a.pending, Pending::Pause(_)) {
                    a.pending = Pending::None;
                }
            }
            Status::Available | Status::Offered { .. } => {}
        }
        Ok(())
    }

    fn check_offer(&self, agent: AgentId, entry: EntryId) -> Result<(), AcdError> {
        match self.agents.get(&agent) {
            None => Err(AcdError::UnknownAgent(agent)),
            Some(a) if a.status == (Status::Offered { entry }) => Ok(()),
            Some(_) => Err(self.agent_err(agent, "answer an offer it does not have")),
        }
    }

    fn accept(&mut self, agent: AgentId, entry: EntryId) -> Result<(), AcdError> {
        self.check_offer(agent, entry)?;
        let now = self.now;
        let qi = self.entries.get(&entry).map_or(0, |e| e.queue);
        if let Some(e) = self.entries.get_mut(&entry) {
            e.status = EntryStatus::InService { agent };
        }
        if let Some(a) = self.agents.get_mut(&agent) {
            a.no_answer = 0;
            a.calls += 1;
            a.call_started = now;
            a.call_queue = qi;
        }
        self.set_status(agent, Status::OnCall { entry });
        Ok(())
    }

    /// An offer failed (refusal, timeout): the entry returns to its place, the agent counts a
    /// no-answer and is available again (keeping its idle time) or paused.
    fn offer_failed(&mut self, agent: AgentId, entry: EntryId, reason: Option<CancelReason>) {
        match reason {
            Some(r) => self.withdraw_offer(agent, entry, r),
            None => self.insert_waiting(entry),
        }
        self.release_offered_agent(agent, true);
    }

    fn release_offered_agent(&mut self, agent: AgentId, count_no_answer: bool) {
        let max = self.settings.max_no_answer;
        let Some(a) = self.agents.get_mut(&agent) else {
            return;
        };
        if count_no_answer {
            a.no_answer += 1;
            if max > 0 && a.no_answer >= max {
                a.pending = Pending::None;
                self.set_status(
                    agent,
                    Status::Paused {
                        reason: PauseReason::NoAnswer,
                    },
                );
                return;
            }
        }
        self.settle(agent, false);
    }

    fn call_ended(&mut self, agent: AgentId, callback_failed: bool) -> Result<(), AcdError> {
        let a = self
            .agents
            .get(&agent)
            .ok_or(AcdError::UnknownAgent(agent))?;
        let Status::OnCall { entry } = a.status else {
            return Err(self.agent_err(agent, "end a call"));
        };
        let qi = a.call_queue;
        if callback_failed {
            let e = self
                .entries
                .get_mut(&entry)
                .ok_or(AcdError::UnknownEntry(entry))?;
            let EntryKind::Callback { attempts } = e.kind else {
                return Err(AcdError::InvalidEntryState {
                    entry,
                    op: "fail a callback (not a callback)",
                });
            };
            let attempts = attempts + 1;
            e.kind = EntryKind::Callback { attempts };
            if attempts >= self.settings.callback_max_attempts {
                self.entries.remove(&entry);
                self.actions.push_back(Action::CallbackExhausted { entry });
            } else {
                self.insert_waiting(entry);
            }
        } else {
            self.entries.remove(&entry);
        }
        let wrap = self.queues[qi].wrap_up;
        if wrap.is_zero() {
            self.record_handle(agent);
            self.settle(agent, true);
        } else {
            self.set_status(agent, Status::WrapUp { code: None });
            let epoch = self.agents.get(&agent).map_or(0, |a| a.epoch);
            self.set_timer(self.now + wrap, TimerKind::WrapUpEnd { agent, epoch });
        }
        Ok(())
    }

    fn record_handle(&mut self, agent: AgentId) {
        let now = self.now;
        let alpha = self.settings.alpha;
        if let Some(a) = self.agents.get(&agent) {
            let q = &mut self.queues[a.call_queue];
            let ht = now.saturating_since(a.call_started).as_secs_f64();
            q.aht_s += alpha * (ht - q.aht_s);
        }
    }

    fn set_wrap_up_code(&mut self, agent: AgentId, code: WrapUpCode) -> Result<(), AcdError> {
        let a = self
            .agents
            .get_mut(&agent)
            .ok_or(AcdError::UnknownAgent(agent))?;
        if !matches!(a.status, Status::WrapUp { .. }) {
            return Err(self.agent_err(agent, "set a wrap-up code"));
        }
        // Same state, same epoch: the wrap-up timer stays valid.
        a.status = Status::WrapUp { code: Some(code) };
        self.emit_state(agent);
        Ok(())
    }

    fn wrap_up_ended(&mut self, agent: AgentId, code: Option<WrapUpCode>) -> Result<(), AcdError> {
        let a = self
            .agents
            .get_mut(&agent)
            .ok_or(AcdError::UnknownAgent(agent))?;
        if !matches!(a.status, Status::WrapUp { .. }) {
            return Err(self.agent_err(agent, "end wrap-up"));
        }
        if code.is_some() {
            a.status = Status::WrapUp { code };
            self.emit_state(agent);
        }
        self.record_handle(agent);
        self.settle(agent, true);
        Ok(())
    }

    // ------------------------------------------------------------------ timers

    fn fire(&mut self, kind: TimerKind) {
        match kind {
            TimerKind::OfferTimeout { agent, epoch } => {
                let Some(a) = self.agents.get(&agent) else {
                    return;
                };
                if a.epoch != epoch {
                    return;
                }
                if let Status::Offered { entry } = a.status {
                    self.offer_failed(agent, entry, Some(CancelReason::Timeout));
                }
            }
            TimerKind::WrapUpEnd { agent, epoch } => {
                let Some(a) = self.agents.get(&agent) else {
                    return;
                };
                if a.epoch == epoch && matches!(a.status, Status::WrapUp { .. }) {
                    self.record_handle(agent);
                    self.settle(agent, true);
                }
            }
            TimerKind::Promote { entry, epoch } => self.promote(entry, epoch),
            TimerKind::VipWiden { entry, epoch } => {
                let Some(e) = self.entries.get_mut(&entry) else {
                    return;
                };
                if e.epoch != epoch || !e.reserved {
                    return;
                }
                if e.status == EntryStatus::Waiting {
                    let key = e.key(entry);
                    let b = self.queues[e.queue].bucket(e.profile);
                    b.reserved.remove(&key);
                    b.open.insert(key);
                    self.dirty_entries.push(entry);
                }
                e.reserved = false;
            }
            TimerKind::Overflow { entry, epoch, step } => self.overflow(entry, epoch, step),
            TimerKind::Announce { entry, epoch } => {
                let Some(e) = self.entries.get(&entry) else {
                    return;
                };
                if e.epoch != epoch {
                    return;
                }
                let every = self.queues[e.queue].announce_every;
                if e.status == EntryStatus::Waiting {
                    if let Some(position) = self.position(entry) {
                        let estimated_wait = self.estimated_wait(entry);
                        self.actions.push_back(Action::Announce {
                            entry,
                            position,
                            estimated_wait,
                        });
                    }
                }
                if let Some(every) = every {
                    self.set_timer(self.now + every, TimerKind::Announce { entry, epoch });
                }
            }
        }
    }

    fn promote(&mut self, entry: EntryId, epoch: u64) {
        let max_class = self.settings.max_class;
        let Some(e) = self.entries.get(&entry) else {
            return;
        };
        if e.epoch != epoch {
            return;
        }
        let q = &self.queues[e.queue];
        let Some(period) = q.promote_after else {
            return;
        };
        let max_promotions = q.max_promotions;
        if e.promotions >= max_promotions || e.class >= max_class {
            return;
        }
        let waiting = e.status == EntryStatus::Waiting;
        if waiting {
            self.remove_waiting(entry);
        }
        let Some(e) = self.entries.get_mut(&entry) else {
            return;
        };
        e.class += 1;
        e.promotions += 1;
        let (class, next) = (
            e.class,
            e.enqueued_at + period * u32::from(e.promotions + 1),
        );
        let more = e.promotions < max_promotions && e.class < max_class;
        if waiting {
            // Re-insert at the new position; no new eligibility arises (it was waiting, so no
            // free agent could serve it), but marking it dirty is harmless.
            self.insert_waiting(entry);
        }
        self.actions.push_back(Action::Promoted { entry, class });
        if more {
            self.set_timer(next.max(self.now), TimerKind::Promote { entry, epoch });
        }
    }

    fn overflow(&mut self, entry: EntryId, epoch: u64, step: usize) {
        let Some(e) = self.entries.get(&entry) else {
            return;
        };
        if e.epoch != epoch {
            return;
        }
        let (qi, entered, waiting, live, profile) = (
            e.queue,
            e.queue_entered_at,
            e.status == EntryStatus::Waiting,
            e.kind == EntryKind::Live,
            e.profile,
        );
        let Some((_, action)) = self.queues[qi].overflow.get(step).cloned() else {
            return;
        };
        if let Some((after, _)) = self.queues[qi].overflow.get(step + 1) {
            let at = entered + *after;
            self.set_timer(
                at,
                TimerKind::Overflow {
                    entry,
                    epoch,
                    step: step + 1,
                },
            );
        }
        if !waiting {
            return;
        }
        match action {
            OverflowAction::Widen {
                lower_levels_by,
                drop_skills,
            } => {
                let reqs: Vec<SkillReq> = self.profiles[profile]
                    .iter()
                    .filter(|r| !drop_skills.contains(&r.skill))
                    .map(|r| SkillReq {
                        skill: r.skill,
                        min_level: r.min_level.saturating_sub(lower_levels_by),
                    })
                    .collect();
                let p = self.intern(&reqs);
                self.remove_waiting(entry);
                if let Some(e) = self.entries.get_mut(&entry) {
                    e.profile = p;
                }
                self.insert_waiting(entry);
                self.actions.push_back(Action::Widened { entry });
            }
            OverflowAction::MoveTo { queue } => {
                let Some(&to) = self.queue_index.get(&queue) else {
                    return;
                };
                self.remove_waiting(entry);
                self.note_departure(qi);
                let now = self.now;
                let profile = self.queues[to].profile;
                if let Some(e) = self.entries.get_mut(&entry) {
                    e.queue = to;
                    e.profile = profile;
                    e.queue_entered_at = now;
                }
                self.arm_entry(entry);
                self.insert_waiting(entry);
                self.actions.push_back(Action::Moved {
                    entry,
                    from: self.queues[qi].id,
                    to: queue,
                });
            }
            OverflowAction::OfferCallback => {
                if live {
                    self.actions.push_back(Action::OfferCallback { entry });
                }
            }
            OverflowAction::Voicemail => {
                if live {
                    self.remove_waiting(entry);
                    self.note_departure(qi);
                    self.entries.remove(&entry);
                    self.actions.push_back(Action::Voicemail { entry });
                }
            }
        }
    }

    // ------------------------------------------------------------------ routing

    /// First waiting entry, in service order, that `agent` may take.
    fn first_eligible(&mut self, id: AgentId) -> Option<Key> {
        let Acd {
            agents,
            queues,
            profiles,
            ..
        } = self;
        let a = agents.get_mut(&id)?;
        let mut best: Option<Key> = None;
        for &(qi, _) in &a.queues {
            for (p, b) in queues[qi].buckets.iter().enumerate() {
                let open = b.open.first();
                let res = if a.vip { b.reserved.first() } else { None };
                let cand = match (open, res) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                };
                let Some(k) = cand else { continue };
                if best.is_some_and(|b| b <= *k) {
                    continue;
                }
                if eligible(&mut a.elig, &a.skills, profiles, p) {
                    best = Some(*k);
                }
            }
        }
        best
    }

    /// The free agent that the entry's queue strategy picks for a waiting entry.
    fn pick_agent(&mut self, id: EntryId) -> Option<AgentId> {
        let Acd {
            agents,
            queues,
            profiles,
            entries,
            ..
        } = self;
        let e = entries.get(&id)?;
        let q = &queues[e.queue];
        let p = e.profile;
        let reserved = e.reserved;
        let mut ok = |aid: &AgentId| -> bool {
            agents.get_mut(aid).is_some_and(|a| {
                (!reserved || a.vip) && eligible(&mut a.elig, &a.skills, profiles, p)
            })
        };
        match q.strategy {
            Strategy::LongestIdle | Strategy::FewestCalls => {
                q.free.iter().map(|k| k.2).find(|aid| ok(aid))
            }
            Strategy::RoundRobin => {
                let split = (q.rr_cursor.saturating_add(1), 0, AgentId(0));
                q.free
                    .range(split..)
                    .chain(q.free.range(..split))
                    .map(|k| k.2)
                    .find(|aid| ok(aid))
            }
            Strategy::BestSkill => {
                let reqs = profiles.get(p)?;
                let ceiling = u32::from(SKILL_MAX) * reqs.len() as u32;
                let mut best: Option<(u32, AgentId)> = None;
                for &(_, _, aid) in &q.free {
                    let Some(a) = agents.get_mut(&aid) else {
                        continue;
                    };
                    if (reserved && !a.vip) || !eligible(&mut a.elig, &a.skills, profiles, p) {
                        continue;
                    }
                    let score: u32 = reqs
                        .iter()
                        .map(|r| u32::from(level_of(&a.skills, r).unwrap_or(0)))
                        .sum();
                    if best.is_none_or(|(s, _)| score > s) {
                        best = Some((score, aid));
                        if score >= ceiling {
                            break; // nobody can beat it; earlier agents idled longer
                        }
                    }
                }
                best.map(|(_, a)| a)
            }
        }
    }

    /// Matches free agents with waiting entries until no pair is left. Each round takes the
    /// earliest entry (in service order) that some free agent may serve and gives it to the
    /// agent its queue's strategy picks. Only entries and agents touched since the last
    /// steady state ("dirty") can form new pairs.
    fn dispatch(&mut self) {
        loop {
            let mut best: Option<(Key, Option<AgentId>)> = None;
            let mut i = 0;
            while i < self.dirty_entries.len() {
                let id = self.dirty_entries[i];
                let key = match self.entries.get(&id) {
                    Some(e) if e.status == EntryStatus::Waiting => e.key(id),
                    _ => {
                        self.dirty_entries.swap_remove(i);
                        continue;
                    }
                };
                if best.is_some_and(|(b, _)| b < key) {
                    i += 1;
                    continue;
                }
                match self.pick_agent(id) {
                    Some(a) => {
                        best = Some((key, Some(a)));
                        i += 1;
                    }
                    None => {
                        self.dirty_entries.swap_remove(i);
                    }
                }
            }
            let mut i = 0;
            while i < self.dirty_agents.len() {
                let id = self.dirty_agents[i];
                let free = self
                    .agents
                    .get(&id)
                    .is_some_and(|a| a.status == Status::Available);
                match free.then(|| self.first_eligible(id)).flatten() {
                    Some(k) => {
                        if best.is_none_or(|(b, _)| k < b) {
                            best = Some((k, None));
                        }
                        i += 1;
                    }
                    None => {
                        self.dirty_agents.swap_remove(i);
                    }
                }
            }
            let Some((key, agent)) = best else { break };
            let entry = key.3;
            let agent = match agent {
                Some(a) => Some(a),
                None => self.pick_agent(entry),
            };
            let Some(agent) = agent else {
                // Unreachable by construction; never loop forever.
                self.violations
                    .push(format!("dispatch: no agent for {entry}"));
                break;
            };
            self.offer(entry, agent);
        }
        self.dirty_agents.clear();
        self.dirty_entries.clear();
    }

    fn offer(&mut self, entry: EntryId, agent: AgentId) {
        if self.self_check {
            self.check_order_at_offer(entry, agent);
        }
        self.remove_waiting(entry);
        let Some(e) = self.entries.get_mut(&entry) else {
            return;
        };
        e.status = EntryStatus::Offered { agent };
        let (qi, kind) = (e.queue, e.kind);
        self.note_departure(qi);
        if let Some(rank) = self
            .agents
            .get(&agent)
            .and_then(|a| a.queues.iter().find(|(q, _)| *q == qi))
            .map(|(_, r)| *r)
        {
            self.queues[qi].rr_cursor = rank;
        }
        self.set_status(agent, Status::Offered { entry });
        self.actions.push_back(Action::Offer {
            entry,
            agent,
            queue: self.queues[qi].id,
            kind,
        });
        if let Some(t) = self.settings.offer_timeout {
            let epoch = self.agents.get(&agent).map_or(0, |a| a.epoch);
            self.set_timer(self.now + t, TimerKind::OfferTimeout { agent, epoch });
        }
    }

    // ------------------------------------------------------------------ self-checks

    /// Test support: when on, every offer is checked (O(entries)) against the order rule and
    /// violations are reported by [`Acd::audit`].
    #[doc(hidden)]
    pub fn set_self_check(&mut self, on: bool) {
        self.self_check = on;
    }

    fn may_take(&self, agent: AgentId, entry: EntryId) -> bool {
        let (Some(a), Some(e)) = (self.agents.get(&agent), self.entries.get(&entry)) else {
            return false;
        };
        a.queues.iter().any(|(q, _)| *q == e.queue)
            && (!e.reserved || a.vip)
            && self
                .profiles
                .get(e.profile)
                .is_some_and(|r| meets(&a.skills, r))
    }

    fn check_order_at_offer(&mut self, entry: EntryId, agent: AgentId) {
        let Some(key) = self.entries.get(&entry).map(|e| e.key(entry)) else {
            return;
        };
        let bad: Vec<EntryId> = self
            .entries
            .iter()
            .filter(|(id, e)| e.status == EntryStatus::Waiting && e.key(**id) < key)
            .map(|(id, _)| *id)
            .filter(|id| self.may_take(agent, *id))
            .collect();
        for b in bad {
            self.violations
                .push(format!("{agent} took {entry} while eligible {b} was ahead"));
        }
        if !self.may_take(agent, entry) {
            self.violations
                .push(format!("{agent} offered ineligible {entry}"));
        }
    }

    /// Test support: checks the structural invariants; returns a description of the first
    /// violation found.
    #[doc(hidden)]
    pub fn audit(&self) -> Result<(), String> {
        if let Some(v) = self.violations.first() {
            return Err(v.clone());
        }
        let live_timer =
            |pred: &dyn Fn(&TimerKind) -> bool| self.timers.iter().any(|Reverse(t)| pred(&t.kind));
        for (&id, a) in &self.agents {
            match a.status {
                Status::Available => {
                    for &(qi, rank) in &a.queues {
                        if !self.queues[qi].free.contains(&Self::free_key(
                            &self.queues[qi],
                            a,
                            id,
                            rank,
                        )) {
                            return Err(format!("{id} available but not in free set"));
                        }
                    }
                    for (&eid, e) in &self.entries {
                        if e.status == EntryStatus::Waiting && self.may_take(id, eid) {
                            return Err(format!("{id} idle while eligible {eid} waits"));
                        }
                    }
                }
                Status::Offered { entry } => {
                    if self.entries.get(&entry).map(|e| e.status)
                        != Some(EntryStatus::Offered { agent: id })
                    {
                        return Err(format!("{id} offered {entry} which is not ringing it"));
                    }
                    let ep = a.epoch;
                    if self.settings.offer_timeout.is_some()
                        && !live_timer(&|k| {
                            *k == TimerKind::OfferTimeout {
                                agent: id,
                                epoch: ep,
                            }
                        })
                    {
                        return Err(format!("{id} ringing without a ring timer"));
                    }
                }
                Status::OnCall { entry } => {
                    if self.entries.get(&entry).map(|e| e.status)
                        != Some(EntryStatus::InService { agent: id })
                    {
                        return Err(format!("{id} on call with {entry} which is not with it"));
                    }
                }
                Status::WrapUp { .. } => {
                    let ep = a.epoch;
                    if !live_timer(&|k| {
                        *k == TimerKind::WrapUpEnd {
                            agent: id,
                            epoch: ep,
                        }
                    }) {
                        return Err(format!("{id} in wrap-up without a timer"));
                    }
                }
                Status::Paused { .. } => {}
            }
            if a.status != Status::Available {
                for &(qi, rank) in &a.queues {
                    if self.queues[qi]
                        .free
                        .contains(&Self::free_key(&self.queues[qi], a, id, rank))
                    {
                        return Err(format!("{id} not available but in free set"));
                    }
                }
            }
        }
        let mut in_buckets = 0usize;
        for q in &self.queues {
            for b in &q.buckets {
                in_buckets += b.open.len() + b.reserved.len();
            }
            if q.free.iter().any(|k| {
                self.agents
                    .get(&k.2)
                    .is_none_or(|a| a.status != Status::Available)
            }) {
                return Err("free set holds a non-available agent".into());
            }
        }
        let mut waiting = 0usize;
        for (&id, e) in &self.entries {
            match e.status {
                EntryStatus::Waiting => {
                    waiting += 1;
                    let b = self.queues[e.queue].buckets.get(e.profile);
                    let set = b.map(|b| if e.reserved { &b.reserved } else { &b.open });
                    if !set.is_some_and(|s| s.contains(&e.key(id))) {
                        return Err(format!("{id} waiting but not in its bucket"));
                    }
                }
                EntryStatus::Offered { agent } => {
                    if self.agents.get(&agent).map(|a| a.status)
                        != Some(Status::Offered { entry: id })
                    {
                        return Err(format!("{id} ringing {agent} which does not ring it"));
                    }
                }
                EntryStatus::InService { agent } => {
                    if self.agents.get(&agent).map(|a| a.status)
                        != Some(Status::OnCall { entry: id })
                    {
                        return Err(format!("{id} in service with {agent} which is not on it"));
                    }
                }
            }
        }
        if waiting != in_buckets {
            return Err(format!(
                "{in_buckets} bucket keys for {waiting} waiting entries"
            ));
        }
        Ok(())
    }
}

fn public_state(s: Status) -> AgentState {
    match s {
        Status::Available => AgentState::Available,
        Status::Offered { entry } => AgentState::Offered { entry },
        Status::OnCall { entry } => AgentState::OnCall { entry },
        Status::WrapUp { code } => AgentState::WrapUp { code },
        Status::Paused { reason } => AgentState::Paused { reason },
    }
}
