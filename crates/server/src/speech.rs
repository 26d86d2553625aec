//! The recogniser pool: speech turns of live calls are recognised here, never on the media
//! worker or the SIP task.
//!
//! `workers` threads (config `[speech] workers`) each own a [`WhisperRecognizer`] (its own
//! decoder state) over one shared loaded [`WhisperModel`]. Jobs come over a bounded queue
//! (`[speech] queue`): when it is full, [`RecognizerPool::submit`] refuses at once and the
//! caller's turn is answered "no match" (the caller hears "sorry" and can use keys) instead of
//! waiting behind the backlog. Results go back to the SIP task as [`SpeechDone`] notes; the SIP
//! task drops results of a turn that is no longer current. See docs/speech-in-calls.md.
//!
//! Speculative jobs (the utterance up to a pause, `spec` > 0, see `calls/speech_turns.rs`)
//! go through the same queue but only while it is at most half full, so they never take the
//! room of an utterance that has ended; one cancelled before a thread takes it is skipped.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use frontdoor_ivr::{ListenRequest, SpeechMeaning, SpeechResult};
use frontdoor_speech::{
    Expectation, Interpretation, Outcome, Recognizer, WhisperConfig, WhisperModel,
    WhisperRecognizer,
};

/// Settings of the pool (`[speech]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Recogniser threads.
    pub workers: usize,
    /// Jobs that may wait.
    pub queue: usize,
    /// Bias the decoder with the expectation's wording (Whisper's initial prompt).
    pub prompt: bool,
    /// Decode once per thread at start (pages the model in before the first caller).
    pub warm_up: bool,
}

/// One utterance to recognise.
#[derive(Debug)]
pub struct SpeechJob {
    /// The call (media leg key).
    pub key: u64,
    /// The call's speech turn the utterance belongs to.
    pub turn: u64,
    /// 8 kHz mono PCM.
    pub pcm: Vec<i16>,
    /// What the step expects.
    pub expect: Arc<Expectation>,
    /// When the endpointer decided the end of speech (media worker clock); for a speculative
    /// job, when the SIP task saw the pause (the end is not known yet).
    pub decided: Instant,
    /// When the job was queued.
    pub queued: Instant,
    /// 0: the utterance has ended; otherwise the speculation number of an utterance so far.
    pub spec: u64,
    /// Set when a speculation was given up before it ran: the job is skipped.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// A finished recognition, for the SIP task.
#[derive(Debug)]
pub struct SpeechDone {
    /// The call.
    pub key: u64,
    /// The turn it was for.
    pub turn: u64,
    /// The job's speculation number (0: the ended utterance).
    pub spec: u64,
    /// What the recogniser made of it (`Err`: the engine failed; the turn gets "no match").
    pub result: Result<SpeechResult, String>,
    /// `true` when the result is an input of its own (`Outcome::NoInput`: blank transcript).
    pub no_input: bool,
    /// End of speech (the endpointer's decision).
    pub decided: Instant,
    /// Time in the queue.
    pub queue_wait: Duration,
    /// Time recognising.
    pub decode: Duration,
    /// Length of the audio recognised, ms.
    pub audio_ms: u32,
}

/// Bounded pool of recogniser threads over one loaded model.
#[derive(Debug)]
pub struct RecognizerPool {
    tx: SyncSender<SpeechJob>,
    workers: usize,
    queue: usize,
    /// Jobs queued and not yet taken by a thread.
    queued: Arc<AtomicUsize>,
}

impl RecognizerPool {
    /// Starts `cfg.workers` threads over `model` with a queue of `cfg.queue` jobs; each result
    /// goes to `done`. Fails when a thread or a recogniser cannot be created.
    pub fn start(
        model: &WhisperModel,
        cfg: PoolConfig,
        done: impl Fn(SpeechDone) + Send + Sync + 'static,
    ) -> Result<Self, String> {
        let queue = cfg.queue.max(1);
        let (tx, rx) = sync_channel::<SpeechJob>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let done = Arc::new(done);
        let queued = Arc::new(AtomicUsize::new(0));
        let workers = cfg.workers.max(1);
        let whisper = WhisperConfig {
            use_prompt: cfg.prompt,
            ..WhisperConfig::default()
        };
        for i in 0..workers {
            // Created here, so a model whatever.cpp cannot run fails the start, not a call.
            let mut recognizer = WhisperRecognizer::with_config(model, whisper.clone())
                .map_err(|e| format!("cannot create a speech recogniser: {e}"))?;
            let rx = rx.clone();
            let done = done.clone();
            let queued = queued.clone();
            let warm_up = cfg.warm_up;
            std::thread::Builder::new()
                .name(format!("asr-{i}"))
                .spawn(move || {
                    if warm_up {
                        // one second of silence through encoder and decoder: the model's pages
                        // and the scratch buffers are in memory before the first caller
                        let _ = recognizer.transcribe(&[0.0; 16_000], 1_000, "");
                    }
                    run(recognizer, &rx, &queued, &*done);
                })
                .map_err(|e| format!("cannot start a recogniser thread: {e}"))?;
        }
        Ok(Self {
            tx,
            workers,
            queue,
            queued,
        })
    }

    /// Recogniser threads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Queues a job without ever blocking; `Err` gives it back when the queue is full (or the
    /// pool is gone).
    pub fn submit(&self, job: SpeechJob) -> Result<(), SpeechJob> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.tx.try_send(job).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            match e {
                TrySendError::Full(j) | TrySendError::Disconnected(j) => j,
            }
        })
    }

    /// Queues a speculative job only while the queue is at most half full (ended utterances
    /// keep their room); `Err` gives it back.
    pub fn submit_speculative(&self, job: SpeechJob) -> Result<(), SpeechJob> {
        if self.queued.load(Ordering::Relaxed) * 2 >= self.queue {
            return Err(job);
        }
        self.submit(job)
    }
}

fn run(
    mut recognizer: WhisperRecognizer,
    rx: &Mutex<Receiver<SpeechJob>>,
    queued: &AtomicUsize,
    done: &(dyn Fn(SpeechDone) + Send + Sync),
) {
    loop {
        let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = next else { return };
        queued.fetch_sub(1, Ordering::Relaxed);
        if job
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            continue; // a speculation given up before it ran
        }
        let start = Instant::now();
        let queue_wait = start.saturating_duration_since(job.queued);
        let audio_ms = u32::try_from(job.pcm.len() / 8).unwrap_or(u32::MAX);
        let outcome = recognizer.recognize(&job.pcm, 8000, &job.expect);
        let decode = start.elapsed();
        let (result, no_input) = match outcome {
            Ok(rec) => {
                let no_input = matches!(rec.outcome, Outcome::NoInput);
                (Ok(speech_result(rec.transcript, &rec.outcome)), no_input)
            }
            Err(e) => (Err(e.to_string()), false),
        };
        done(SpeechDone {
            key: job.key,
            turn: job.turn,
            spec: job.spec,
            result,
            no_input,
            decided: job.decided,
            queue_wait,
            decode,
            audio_ms,
        });
    }
}

/// The interpreter's input for a recognition: the best hypothesis even below the recogniser's
/// threshold (the interpreter applies `accept`/`reject`).
pub fn speech_result(transcript: String, outcome: &Outcome) -> SpeechResult {
    let best = match outcome {
        Outcome::Match(h) => Some(h),
        Outcome::NoMatch(h) => h.as_ref(),
        Outcome::NoInput => None,
    };
    SpeechResult {
        transcript,
        meaning: best.map(|h| match &h.interpretation {
            Interpretation::Intent(n) => SpeechMeaning::Intent(n.clone()),
            Interpretation::Digits(d) => SpeechMeaning::Digits(d.clone()),
            Interpretation::Yes => SpeechMeaning::Yes,
            Interpretation::No => SpeechMeaning::No,
        }),
        confidence: best.map_or(0.0, |h| h.score),
    }
}

/// "Nothing recognised": what a turn gets when the queue is full or the engine failed.
pub fn no_match() -> SpeechResult {
    SpeechResult {
        transcript: String::new(),
        meaning: None,
        confidence: 0.0,
    }
}

/// The recogniser's expectation for a speech turn.
pub fn expectation(req: &ListenRequest) -> Expectation {
    let mut expect = Expectation::new();
    for i in &req.intents {
        let phrases: Vec<&str> = i.phrases.iter().map(String::as_str).collect();
        expect = expect.intent(&i.name, &phrases);
    }
    if let Some((a, b)) = req.digits {
        expect = expect.digits(a, b);
    }
    if req.yes_no {
        expect = expect.yes_no();
    }
    if let Some(training) = &req.training {
        // The step's intent classifier (trained once per process). A call must not fail on
        // it: without it (missing embeddings, bad file) the phrase matcher scores the intents.
        let intents: Vec<(String, Vec<String>)> = req
            .intents
            .iter()
            .map(|i| (i.name.clone(), i.phrases.clone()))
            .collect();
        match frontdoor_speech::nlu::shared_classifier(
            training,
            &intents,
            &frontdoor_speech::models_dir(),
        ) {
            Ok(c) => expect = expect.classifier(c),
            Err(e) => {
                tracing::warn!(error = %e, "intent classifier unavailable; using the phrase matcher")
            }
        }
    }
    expect.reject_below(req.reject_below)
}

/// Loads the model for the pool; `Err` is the warning to log (speech steps then fall back to
/// keys: every utterance is answered "no match").
pub fn load_model(path: &std::path::Path) -> Result<WhisperModel, String> {
    WhisperModel::load(path).map_err(|e| {
        format!(
            "speech recognition is off: {e}; speech steps fall back to keys \
             (fetch the models with scripts/models/fetch or set FRONTDOOR_MODELS_DIR)"
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use frontdoor_ivr::ListenIntent;
    use frontdoor_speech::Hypothesis;

    fn req() -> ListenRequest {
        ListenRequest {
            step: "s".to_owned(),
            intents: vec![ListenIntent {
                name: "lost_card".to_owned(),
                phrases: vec!["I lost my card".to_owned()],
            }],
            digits: Some((4, 8)),
            yes_no: true,
            barge_in: true,
            end_silence: Duration::from_millis(800),
            max_speech: Duration::from_secs(10),
            no_input: Duration::from_secs(5),
            reject_below: 0.4,
            language: "en".to_owned(),
            confirmation: false,
            training: None,
        }
    }

    #[test]
    fn a_listen_request_becomes_the_expectation() {
        let e = expectation(&req());
        assert_eq!(e.intents.len(), 1);
        assert_eq!(e.intents[0].name, "lost_card");
        assert_eq!(e.intents[0].phrases, vec!["I lost my card".to_owned()]);
        assert_eq!(e.digits, Some((4, 8)));
        assert!(e.yes_no);
    }

    #[test]
    fn the_best_hypothesis_is_reported_even_below_the_threshold() {
        let h = Hypothesis {
            interpretation: Interpretation::Intent("lost_card".to_owned()),
            score: 0.5,
        };
        let r = speech_result("lost card".to_owned(), &Outcome::NoMatch(Some(h)));
        assert_eq!(
            r.meaning,
            Some(SpeechMeaning::Intent("lost_card".to_owned()))
        );
        assert!((r.confidence - 0.5).abs() < 1e-6);
        let r = speech_result("hmm".to_owned(), &Outcome::NoMatch(None));
        assert_eq!(r.meaning, None);
        assert_eq!(r.confidence, 0.0);
    }

    #[test]
    fn a_missing_model_is_a_clear_error() {
        let e = load_model(std::path::Path::new("/nonexistent/ggml-tiny.en.bin")).unwrap_err();
        assert!(e.contains("speech steps fall back to keys"), "{e}");
        assert!(e.contains("/nonexistent/ggml-tiny.en.bin"), "{e}");
    }
}
