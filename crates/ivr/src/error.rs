//! Errors and validation diagnostics.

use std::fmt;
use std::path::PathBuf;

use crate::model::FlowId;

/// Errors of the IVR crate.
#[derive(Debug, thiserror::Error)]
pub enum IvrError {
    /// A dialplan file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A call was started on a flow the dialplan does not have.
    #[error("dialplan has no flow `{0}`")]
    UnknownFlow(FlowId),
    /// The dialplans did not validate (see the diagnostics).
    #[error("{} dialplan error(s)", .0.len())]
    Invalid(Vec<Diagnostic>),
}

/// Severity of a diagnostic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The dialplan is rejected.
    Error,
    /// Reported, the dialplan still loads.
    Warning,
}

/// What kind of problem a diagnostic reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiagnosticKind {
    /// The file is not valid TOML.
    Syntax,
    /// A key the format does not know.
    UnknownKey,
    /// A `verb` the format does not know.
    UnknownVerb,
    /// A required key is missing.
    MissingKey,
    /// A value has the wrong type.
    WrongType,
    /// A value is out of range or malformed.
    InvalidValue,
    /// A step reference (goto/menu/next/...) names no step of the flow.
    MissingStep,
    /// A step no path from the flow's start reaches.
    UnreachableStep,
    /// A cycle of steps none of which takes input.
    LoopWithoutInput,
    /// A regex that does not compile.
    BadRegex,
    /// A prompt file that does not exist in the prompts directory.
    MissingPrompt,
    /// A route whose number/prefix/default another route already claims.
    DuplicateRoute,
    /// A flow or hours calendar reference that does not exist.
    UnknownReference,
    /// A `{variable}` or condition variable that is neither built in nor ever set (warning).
    UnknownVariable,
    /// The file could not be read.
    Io,
}

/// One validation problem, with its place in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// Error or warning.
    pub severity: Severity,
    /// The kind of problem.
    pub kind: DiagnosticKind,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            sev,
            self.message
        )?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}
