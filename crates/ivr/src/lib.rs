//! Frontdoor IVR core.
//!
//! * [`load`]: TOML dialplans → validated [`model::Dialplan`]s, with `file:line:col`
//!   [`Diagnostic`]s ([`check_file`], [`check_dir`]) and a hot-reloadable [`DialplanSet`].
//! * [`interp`]: the sans-IO per-call interpreter [`Call`]: events in, actions out.
//!
//! See `docs/dialplans.md` for the format.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod error;
pub mod interp;
pub mod load;
pub mod model;

pub use error::{Diagnostic, DiagnosticKind, IvrError, Severity};
pub use interp::{
    Action, Call, CallContext, CallSummary, CallerAttributes, CollectedDigits, DIGITS_REDACTED,
    EnqueueRequest, Event, GatherFailure, IvrEvent, ListenIntent, ListenRequest, Outcome,
    PlaybackId, QueueOutcome, REDACTED, Recognition, SpeechDecision, SpeechMeaning, SpeechResult,
    SpeechTurnRecord, TransferOutcome, redact_digits,
};
pub use load::{DialplanSet, LoadedDialplan, Reload, RouteMatch, check_dir, check_file, check_str};
pub use model::{Builtin, Dialplan, FlowId, RouteTarget, StepId};
