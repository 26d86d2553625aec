//! Typed identifiers.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $inner:ty, $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

typed_id!(
    /// An agent (a person who takes calls), chosen by the host.
    AgentId,
    u32,
    "agent#"
);
typed_id!(
    /// A queue, as configured.
    QueueId,
    u32,
    "queue#"
);
typed_id!(
    /// A skill (language, product, …), as configured.
    SkillId,
    u32,
    "skill#"
);
typed_id!(
    /// One queued entry (a live caller or a queued callback), chosen by the host; unique while
    /// the entry is known to the core.
    EntryId,
    u64,
    "entry#"
);
typed_id!(
    /// An after-call (wrap-up) disposition code.
    WrapUpCode,
    u32,
    "wrapup#"
);
