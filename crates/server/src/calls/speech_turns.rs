//! Speculative recognition of a speech turn (sans-IO: no clock reads, no channels).
//!
//! The endpointer reports `SpeechPaused` after `[speech] speculate_ms` of silence inside an
//! utterance and `SpeechEnded` only after the step's end silence (800 ms by default). At the
//! pause the SIP task hands the utterance so far to the recogniser pool; if the caller speaks
//! again (`SpeechResumed`) that speculation is given up, and if the utterance ends without
//! more speech the speculative result, already there or still in flight, stands for the
//! ended utterance (the endpointer gives the same samples at both moments), so the routing
//! decision comes at the end of speech instead of one decode later.
//!
//! [`Speculation`] is the per-call state; the SIP task (`calls.rs`) does the IO around it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::speech::SpeechDone;

/// The speculation of the running speech turn.
#[derive(Debug, Default)]
pub struct Speculation {
    state: State,
    /// Last speculation number handed out (numbers start at 1; 0 means "the ended utterance").
    last: u64,
    /// Speculations started since [`Speculation::take_started`] (for the `speech.ended` event).
    started: u32,
}

#[derive(Debug, Default)]
enum State {
    /// No speculation.
    #[default]
    Idle,
    /// The utterance so far is being recognised (queued or decoding).
    InFlight { spec: u64, cancel: Arc<AtomicBool> },
    /// Its result is here; the utterance has not ended yet.
    Done { spec: u64, done: Box<SpeechDone> },
    /// The utterance ended at `decided`; the result of `spec` will stand for it.
    Awaited { spec: u64, decided: Instant },
}

/// What to do when the utterance ends.
#[derive(Debug)]
pub enum AtEnd {
    /// Recognise the ended utterance (no usable speculation).
    Recognize,
    /// The speculative result stands for it: feed it now.
    Use(Box<SpeechDone>),
    /// The speculation still runs: its result will be fed when it comes.
    Await,
}

/// What to do with a speculative result that came back.
#[derive(Debug)]
pub enum Arrived {
    /// Keep it: the utterance has not ended (already stored here).
    Kept,
    /// The utterance has ended meanwhile: feed it; `decided` is the end of speech.
    Use(Box<SpeechDone>, Instant),
    /// Given up (the caller spoke again, the turn changed): drop it.
    Discard(Box<SpeechDone>),
}

impl Speculation {
    /// A new speech turn (or the turn was dropped): forget any speculation, cancelling one
    /// that has not started decoding.
    pub fn reset(&mut self) {
        self.forget();
        self.started = 0;
    }

    fn forget(&mut self) {
        if let State::InFlight { cancel, .. } = &self.state {
            cancel.store(true, Ordering::Relaxed);
        }
        self.state = State::Idle;
    }

    /// `SpeechPaused`: a new speculation replaces any earlier one. Returns its number and
    /// the flag that cancels it, for the job.
    pub fn paused(&mut self) -> (u64, Arc<AtomicBool>) {
        self.forget();
        self.last += 1;
        self.started += 1;
        let cancel = Arc::new(AtomicBool::new(false));
        self.state = State::InFlight {
            spec: self.last,
            cancel: cancel.clone(),
        };
        (self.last, cancel)
    }

    /// The pool refused the job of speculation `spec` (busy): no speculation.
    pub fn refused(&mut self, spec: u64) {
        if self.current() == Some(spec) {
            self.state = State::Idle;
        }
    }

    /// `SpeechResumed`: the caller goes on, the utterance so far is not the utterance.
    pub fn resumed(&mut self) {
        self.forget();
    }

    /// `SpeechEnded` decided at `decided`.
    pub fn ended(&mut self, decided: Instant) -> AtEnd {
        match std::mem::take(&mut self.state) {
            State::Idle => AtEnd::Recognize,
            State::Done { done, .. } => AtEnd::Use(done),
            State::InFlight { spec, .. } => {
                self.state = State::Awaited { spec, decided };
                AtEnd::Await
            }
            // a second end without a new pause cannot happen; recognise to be safe
            State::Awaited { spec, decided } => {
                self.state = State::Awaited { spec, decided };
                AtEnd::Recognize
            }
        }
    }

    /// A speculative result (`done.spec` > 0) of the current turn came back.
    pub fn arrived(&mut self, done: SpeechDone) -> Arrived {
        let done = Box::new(done);
        if self.current() != Some(done.spec) {
            return Arrived::Discard(done);
        }
        match std::mem::take(&mut self.state) {
            State::InFlight { spec, .. } => {
                self.state = State::Done { spec, done };
                Arrived::Kept
            }
            State::Awaited { decided, .. } => Arrived::Use(done, decided),
            other => {
                self.state = other;
                Arrived::Discard(done)
            }
        }
    }

    /// Speculations started (refused ones included) since the last call.
    pub fn take_started(&mut self) -> u32 {
        std::mem::take(&mut self.started)
    }

    /// Whether a speculation is in flight, done or awaited.
    pub fn active(&self) -> bool {
        self.current().is_some()
    }

    fn current(&self) -> Option<u64> {
        match &self.state {
            State::Idle => None,
            State::InFlight { spec, .. }
            | State::Done { spec, .. }
            | State::Awaited { spec, .. } => Some(*spec),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::speech::no_match;
    use std::time::Duration;

    fn done(spec: u64, transcript: &str) -> SpeechDone {
        let mut result = no_match();
        result.transcript = transcript.to_owned();
        SpeechDone {
            key: 1,
            turn: 1,
            spec,
            result: Ok(result),
            no_input: false,
            decided: Instant::now(),
            queue_wait: Duration::ZERO,
            decode: Duration::from_millis(300),
            audio_ms: 1_500,
        }
    }

    fn transcript(d: &SpeechDone) -> &str {
        &d.result.as_ref().unwrap().transcript
    }

    #[test]
    fn a_result_done_before_the_end_is_used_at_the_end() {
        let mut s = Speculation::default();
        let (spec, _) = s.paused();
        assert!(matches!(
            s.arrived(done(spec, "I lost my card")),
            Arrived::Kept
        ));
        match s.ended(Instant::now()) {
            AtEnd::Use(d) => assert_eq!(transcript(&d), "I lost my card"),
            other => panic!("{other:?}"),
        }
        assert!(!s.active());
        // the next utterance of the turn without a pause is recognised normally
        assert!(matches!(s.ended(Instant::now()), AtEnd::Recognize));
    }

    #[test]
    fn a_result_still_in_flight_at_the_end_is_awaited_and_fed_with_the_end_time() {
        let mut s = Speculation::default();
        let (spec, _) = s.paused();
        let end = Instant::now();
        assert!(matches!(s.ended(end), AtEnd::Await));
        match s.arrived(done(spec, "agent please")) {
            Arrived::Use(d, decided) => {
                assert_eq!(transcript(&d), "agent please");
                assert_eq!(decided, end);
            }
            other => panic!("{other:?}"),
        }
        assert!(!s.active());
    }

    #[test]
    fn speech_after_the_pause_gives_the_speculation_up() {
        let mut s = Speculation::default();
        let (first, cancel) = s.paused();
        s.resumed();
        assert!(cancel.load(Ordering::Relaxed), "the queued job is skipped");
        // its result, if it was already decoding, is dropped
        assert!(matches!(
            s.arrived(done(first, "I lost")),
            Arrived::Discard(_)
        ));
        // a second pause speculates again; a late result of the first one is still dropped
        let (second, cancel2) = s.paused();
        assert_ne!(first, second);
        assert!(matches!(
            s.arrived(done(first, "I lost")),
            Arrived::Discard(_)
        ));
        assert!(!cancel2.load(Ordering::Relaxed));
        assert!(matches!(
            s.arrived(done(second, "I lost my card")),
            Arrived::Kept
        ));
        assert_eq!(s.take_started(), 2);
        assert_eq!(s.take_started(), 0);
        match s.ended(Instant::now()) {
            AtEnd::Use(d) => assert_eq!(transcript(&d), "I lost my card"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_result_kept_then_resumed_is_not_used() {
        let mut s = Speculation::default();
        let (spec, _) = s.paused();
        assert!(matches!(s.arrived(done(spec, "I lost")), Arrived::Kept));
        s.resumed();
        assert!(matches!(s.ended(Instant::now()), AtEnd::Recognize));
    }

    #[test]
    fn a_refused_speculation_means_recognising_at_the_end() {
        let mut s = Speculation::default();
        let (spec, _) = s.paused();
        s.refused(spec);
        assert!(!s.active());
        assert!(matches!(s.ended(Instant::now()), AtEnd::Recognize));
    }

    #[test]
    fn a_new_turn_cancels_and_forgets() {
        let mut s = Speculation::default();
        let (spec, cancel) = s.paused();
        s.reset();
        assert!(cancel.load(Ordering::Relaxed));
        assert_eq!(s.take_started(), 0, "a new turn counts afresh");
        assert!(matches!(s.arrived(done(spec, "x")), Arrived::Discard(_)));
        assert!(matches!(s.ended(Instant::now()), AtEnd::Recognize));
    }
}
