//! Structural validation of whisper.cpp ggml model files.
//!
//! whisper.cpp itself reports a damaged file only on stderr and, for some headers (a huge
//! vocabulary size, a truncated tensor), after allocating a lot of memory. Walking the file
//! first costs a few hundred seeks and turns every such case into a [`SpeechError::ModelCorrupt`]
//! that names the file.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::SpeechError;

const GGML_MAGIC: u32 = 0x6767_6d6c;

/// Header fields of a ggml Whisper model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlHeader {
    /// Vocabulary size (51864 English-only, 51865/51866 multilingual).
    pub n_vocab: u32,
    /// Encoder context (1500 = 30 s).
    pub n_audio_ctx: u32,
    /// Encoder width.
    pub n_audio_state: u32,
    /// Encoder layers.
    pub n_audio_layer: u32,
    /// Decoder layers.
    pub n_text_layer: u32,
    /// Mel bins (80 or 128).
    pub n_mels: u32,
    /// Weight type (0 f32, 1 f16, other: quantized).
    pub ftype: u32,
    /// Number of tensors in the file.
    pub n_tensors: u32,
}

impl GgmlHeader {
    /// True for models with the multilingual vocabulary.
    pub fn is_multilingual(&self) -> bool {
        self.n_vocab >= 51865
    }
}

/// (block size in elements, bytes per block) for the ggml tensor types Whisper models use.
fn type_layout(ttype: u32) -> Option<(u64, u64)> {
    Some(match ttype {
        0 => (1, 4),   // f32
        1 => (1, 2),   // f16
        2 => (32, 18), // q4_0
        3 => (32, 20), // q4_1
        6 => (32, 22), // q5_0
        7 => (32, 24), // q5_1
        8 => (32, 34), // q8_0
        _ => return None,
    })
}

fn corrupt(path: &Path, reason: impl Into<String>) -> SpeechError {
    SpeechError::ModelCorrupt {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Check that `path` is a complete, well-formed ggml Whisper model and return its header.
pub fn validate_ggml(path: &Path) -> Result<GgmlHeader, SpeechError> {
    let file = File::open(path).map_err(|source| SpeechError::ModelMissing {
        path: path.to_owned(),
        source,
    })?;
    let len = file
        .metadata()
        .map_err(|e| corrupt(path, e.to_string()))?
        .len();
    let mut r = BufReader::new(file);
    let mut pos: u64 = 0;
    let read_u32 =
        |r: &mut BufReader<File>, pos: &mut u64, what: &str| -> Result<u32, SpeechError> {
            let mut b = [0u8; 4];
            r.read_exact(&mut b)
                .map_err(|_| corrupt(path, format!("truncated at byte {pos} reading {what}")))?;
            *pos += 4;
            Ok(u32::from_le_bytes(b))
        };
    let skip =
        |r: &mut BufReader<File>, pos: &mut u64, n: u64, what: &str| -> Result<(), SpeechError> {
            if *pos + n > len {
                return Err(corrupt(
                    path,
                    format!("truncated: {what} needs {n} bytes at {pos}, file has {len}"),
                ));
            }
            r.seek_relative(i64::try_from(n).map_err(|_| corrupt(path, "size overflow"))?)
                .map_err(|e| corrupt(path, e.to_string()))?;
            *pos += n;
            Ok(())
        };

    if read_u32(&mut r, &mut pos, "magic")? != GGML_MAGIC {
        return Err(corrupt(path, "bad magic (not a ggml file)"));
    }
    let mut hp = [0u32; 11];
    for v in &mut hp {
        *v = read_u32(&mut r, &mut pos, "hparams")?;
    }
    let [
        n_vocab,
        n_audio_ctx,
        n_audio_state,
        n_audio_head,
        n_audio_layer,
        n_text_ctx,
        n_text_state,
        n_text_head,
        n_text_layer,
        n_mels,
        ftype,
    ] = hp;
    let sane = (50_000..=52_000).contains(&n_vocab)
        && n_audio_ctx == 1500
        && n_text_ctx == 448
        && (64..=2048).contains(&n_audio_state)
        && (1..=64).contains(&n_audio_head)
        && (1..=64).contains(&n_audio_layer)
        && (64..=2048).contains(&n_text_state)
        && (1..=64).contains(&n_text_head)
        && (1..=64).contains(&n_text_layer)
        && (n_mels == 80 || n_mels == 128)
        && ftype % 1000 <= 20;
    if !sane {
        return Err(corrupt(
            path,
            format!("implausible hyper-parameters {hp:?}"),
        ));
    }
    let filt_rows = read_u32(&mut r, &mut pos, "mel filter rows")?;
    let filt_cols = read_u32(&mut r, &mut pos, "mel filter cols")?;
    if filt_rows != n_mels || filt_cols > 1024 {
        return Err(corrupt(
            path,
            format!("mel filter bank {filt_rows}x{filt_cols} for {n_mels} mels"),
        ));
    }
    skip(
        &mut r,
        &mut pos,
        u64::from(filt_rows) * u64::from(filt_cols) * 4,
        "mel filters",
    )?;
    let n_tokens = read_u32(&mut r, &mut pos, "token count")?;
    if n_tokens > n_vocab {
        return Err(corrupt(
            path,
            format!("{n_tokens} tokens for a vocabulary of {n_vocab}"),
        ));
    }
    for _ in 0..n_tokens {
        let l = read_u32(&mut r, &mut pos, "token length")?;
        if l > 1024 {
            return Err(corrupt(path, format!("token of length {l}")));
        }
        skip(&mut r, &mut pos, u64::from(l), "token")?;
    }
    let mut n_tensors = 0u32;
    while pos < len {
        let n_dims = read_u32(&mut r, &mut pos, "tensor rank")?;
        let name_len = read_u32(&mut r, &mut pos, "tensor name length")?;
        let ttype = read_u32(&mut r, &mut pos, "tensor type")?;
        if !(1..=4).contains(&n_dims) || !(1..=256).contains(&name_len) {
            return Err(corrupt(
                path,
                format!(
                    "tensor header at byte {} (rank {n_dims}, name {name_len} bytes)",
                    pos - 12
                ),
            ));
        }
        let mut elements: u64 = 1;
        for _ in 0..n_dims {
            let d = read_u32(&mut r, &mut pos, "tensor dims")?;
            if d == 0 || d > 1 << 20 {
                return Err(corrupt(path, format!("tensor dimension {d}")));
            }
            elements *= u64::from(d);
        }
        skip(&mut r, &mut pos, u64::from(name_len), "tensor name")?;
        let (block, bytes) = type_layout(ttype)
            .ok_or_else(|| corrupt(path, format!("unsupported tensor type {ttype}")))?;
        skip(
            &mut r,
            &mut pos,
            elements.div_ceil(block) * bytes,
            "tensor data",
        )?;
        n_tensors += 1;
    }
    // encoder: positional embedding, 2 convs (w, b), ln_post (w, b) + 15 per layer;
    // decoder: positional and token embeddings, ln (w, b) + 24 per layer.
    let min_tensors = 7 + 15 * n_audio_layer + 4 + 24 * n_text_layer;
    if n_tensors < min_tensors {
        return Err(corrupt(
            path,
            format!("only {n_tensors} tensors, expected at least {min_tensors}"),
        ));
    }
    Ok(GgmlHeader {
        n_vocab,
        n_audio_ctx,
        n_audio_state,
        n_audio_layer,
        n_text_layer,
        n_mels,
        ftype,
        n_tensors,
    })
}
