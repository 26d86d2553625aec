//! Prompts: decode once (WAV, FLAC, MP3, Ogg/Vorbis via symphonia), mix to mono, resample
//! to 8 kHz (rubato), pre-encode to PCMU and PCMA **once**, and share the encoded audio
//! between every call.
//!
//! A [`Prompt`] is an `Arc` around one contiguous PCMU and one PCMA buffer ([`Bytes`]);
//! the frames a [`PromptPlayer`] sends are zero-copy `Bytes::slice`s of those buffers
//! (a reference-count increment per 20 ms tick, no per-call copies).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use crate::MediaError;
use crate::g711::{G711, Ptime, SAMPLE_RATE};

/// File extensions the library tries to load (others are ignored silently).
pub const AUDIO_EXTENSIONS: [&str; 6] = ["wav", "flac", "mp3", "ogg", "oga", "opus"];

#[derive(Debug)]
struct PromptData {
    name: String,
    pcmu: Bytes,
    pcma: Bytes,
    samples: usize,
}

/// A decoded, resampled, pre-encoded prompt. Cloning is an `Arc` clone.
#[derive(Debug, Clone)]
pub struct Prompt {
    inner: Arc<PromptData>,
}

fn perr(path: &Path, reason: impl std::fmt::Display) -> MediaError {
    MediaError::Prompt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Decode an audio file to mono `f32` samples and its sample rate.
fn decode_mono(
    path: &Path,
    source: Box<dyn symphonia::core::io::MediaSource>,
) -> Result<(Vec<f32>, u32), MediaError> {
    let mss = MediaSourceStream::new(source, Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| perr(path, format!("unrecognised format: {e}")))?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| perr(path, "no audio track"))?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| perr(path, "no audio codec parameters"))?;
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| perr(path, format!("unsupported codec: {e}")))?;
    let mut mono = Vec::new();
    let mut rate = 0u32;
    let mut interleaved: Vec<f32> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break;
            }
            Err(e) => return Err(perr(path, format!("read error: {e}"))),
        };
        if packet.track_id != track_id {
            continue;
        }
        match decoder.decode(&packet) {
            Ok(buf) => {
                let channels = buf.spec().channels().count().max(1);
                rate = buf.spec().rate();
                buf.copy_to_vec_interleaved(&mut interleaved);
                let frames = buf.frames();
                mono.extend(
                    interleaved
                        .chunks(channels)
                        .take(frames)
                        .map(|f| f.iter().sum::<f32>() / channels as f32),
                );
            }
            Err(SymphoniaError::DecodeError(_)) => continue, // skip a corrupt packet
            Err(e) => return Err(perr(path, format!("decode error: {e}"))),
        }
    }
    if mono.is_empty() || rate == 0 {
        return Err(perr(path, "no audio decoded"));
    }
    Ok((mono, rate))
}

/// Resample mono audio to 8 kHz with rubato's FFT resampler.
fn resample_to_8k(path: &Path, input: &[f32], rate: u32) -> Result<Vec<f32>, MediaError> {
    if rate == SAMPLE_RATE {
        return Ok(input.to_vec());
    }
    let mut rs = Fft::<f32>::new(
        rate as usize,
        SAMPLE_RATE as usize,
        1024,
        1,
        FixedSync::Input,
    )
    .map_err(|e| MediaError::Resample(format!("{}: {e}", path.display())))?;
    let needed = rs.process_all_needed_output_len(input.len());
    let mut out = vec![0f32; needed];
    let inp = InterleavedSlice::new(input, 1, input.len())
        .map_err(|e| MediaError::Resample(e.to_string()))?;
    let mut outp = InterleavedSlice::new_mut(&mut out, 1, needed)
        .map_err(|e| MediaError::Resample(e.to_string()))?;
    let (_, produced) = rs
        .process_all_into_buffer(&inp, &mut outp, input.len(), None)
        .map_err(|e| MediaError::Resample(format!("{}: {e}", path.display())))?;
    out.truncate(produced);
    Ok(out)
}

impl Prompt {
    /// Build a prompt from 8 kHz mono PCM (encoded once, here).
    pub fn from_pcm(name: &str, pcm: &[i16]) -> Prompt {
        let pcmu = G711::Pcmu.encode(pcm);
        let pcma = G711::Pcma.encode(pcm);
        Prompt {
            inner: Arc::new(PromptData {
                name: name.to_string(),
                pcmu,
                pcma,
                samples: pcm.len(),
            }),
        }
    }

    /// Load and pre-encode a file. The name is the file stem.
    pub fn load(path: &Path) -> Result<Prompt, MediaError> {
        let file = std::fs::File::open(path).map_err(|e| perr(path, e))?;
        Self::decode(path, Box::new(file))
    }

    /// Decode in-memory file contents (`path` is used for the name, the format hint and
    /// error messages).
    pub fn from_bytes(path: &Path, data: Vec<u8>) -> Result<Prompt, MediaError> {
        Self::decode(path, Box::new(std::io::Cursor::new(data)))
    }

    fn decode(
        path: &Path,
        src: Box<dyn symphonia::core::io::MediaSource>,
    ) -> Result<Prompt, MediaError> {
        let (mono, rate) = decode_mono(path, src)?;
        let pcm8k = resample_to_8k(path, &mono, rate)?;
        let pcm: Vec<i16> = pcm8k
            .iter()
            .map(|s| (s * 32768.0).clamp(-32768.0, 32767.0) as i16)
            .collect();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("prompt");
        Ok(Self::from_pcm(name, &pcm))
    }

    /// Name (file stem).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Length in samples at 8 kHz.
    pub fn samples(&self) -> usize {
        self.inner.samples
    }

    /// Playing time.
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.inner.samples as u64 * 1_000_000 / u64::from(SAMPLE_RATE))
    }

    /// The whole encoded prompt.
    pub fn encoded(&self, codec: G711) -> &Bytes {
        match codec {
            G711::Pcmu => &self.inner.pcmu,
            G711::Pcma => &self.inner.pcma,
        }
    }

    /// Number of `ptime` frames (the last may be partial).
    pub fn frame_count(&self, ptime: Ptime) -> usize {
        self.inner.samples.div_ceil(ptime.samples())
    }

    /// Frame `index` of `ptime` as a zero-copy slice (the last frame may be short).
    pub fn frame(&self, codec: G711, ptime: Ptime, index: usize) -> Option<Bytes> {
        let all = self.encoded(codec);
        let start = index.checked_mul(ptime.samples())?;
        if start >= all.len() {
            return None;
        }
        Some(all.slice(start..(start + ptime.samples()).min(all.len())))
    }

    /// Whether two handles share the same encoded audio (no copy was made).
    pub fn ptr_eq(a: &Prompt, b: &Prompt) -> bool {
        Arc::ptr_eq(&a.inner, &b.inner)
    }
}

/// A directory of prompts, loaded once at start-up and shared by all calls.
#[derive(Debug, Clone, Default)]
pub struct PromptLibrary {
    dir: PathBuf,
    prompts: HashMap<String, Prompt>,
}

/// Non-fatal problems found while loading a library: (file, why).
pub type PromptWarnings = Vec<(PathBuf, MediaError)>;

impl PromptLibrary {
    /// Load every audio file (by extension, see [`AUDIO_EXTENSIONS`]) in `dir`.
    ///
    /// A prompt named in `required` (file stem, e.g. `"welcome"`) that is missing or
    /// cannot be decoded is an error naming the path and the reason; any other file that
    /// fails to decode is returned as a warning and skipped.
    pub fn load_dir(
        dir: &Path,
        required: &[&str],
    ) -> Result<(PromptLibrary, PromptWarnings), MediaError> {
        let rd = std::fs::read_dir(dir).map_err(|e| perr(dir, e))?;
        let mut paths: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
                    })
            })
            .collect();
        paths.sort();
        let mut lib = PromptLibrary {
            dir: dir.to_path_buf(),
            prompts: HashMap::new(),
        };
        let mut warnings = Vec::new();
        for path in paths {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            match Prompt::load(&path) {
                Ok(p) => {
                    lib.prompts.insert(stem, p);
                }
                Err(e) if required.contains(&stem.as_str()) => return Err(e),
                Err(e) => warnings.push((path, e)),
            }
        }
        for r in required {
            if !lib.prompts.contains_key(*r) {
                return Err(MediaError::PromptMissing {
                    name: (*r).to_string(),
                    dir: dir.to_path_buf(),
                });
            }
        }
        Ok((lib, warnings))
    }

    /// A prompt by name (file stem).
    pub fn get(&self, name: &str) -> Option<&Prompt> {
        self.prompts.get(name)
    }

    /// Add (or replace) a prompt.
    pub fn insert(&mut self, prompt: Prompt) {
        self.prompts.insert(prompt.name().to_string(), prompt);
    }

    /// Names of all loaded prompts, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.prompts.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Number of prompts.
    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    /// Whether the library is empty.
    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    /// The directory it was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// What a [`PromptPlayer`] plays when its queue is empty.
#[derive(Debug, Clone, Default)]
pub enum Idle {
    /// Encoded digital silence (comfort).
    #[default]
    Silence,
    /// Loop a prompt (hold music).
    Loop(Prompt),
}

/// Per-call prompt playback: yields one encoded frame per ptime tick, by index into the
/// shared prompt buffers.
#[derive(Debug, Clone)]
pub struct PromptPlayer {
    codec: G711,
    ptime: Ptime,
    queue: VecDeque<Prompt>,
    pos: usize,
    idle: Idle,
    idle_pos: usize,
}

impl PromptPlayer {
    /// A player for one call's codec and ptime.
    pub fn new(codec: G711, ptime: Ptime) -> Self {
        PromptPlayer {
            codec,
            ptime,
            queue: VecDeque::new(),
            pos: 0,
            idle: Idle::Silence,
            idle_pos: 0,
        }
    }

    /// Queue a prompt after whatever is playing.
    pub fn play(&mut self, prompt: Prompt) {
        self.queue.push_back(prompt);
    }

    /// Stop all queued prompts (barge-in).
    pub fn stop(&mut self) {
        self.queue.clear();
        self.pos = 0;
    }

    /// What to play when the queue is empty.
    pub fn set_idle(&mut self, idle: Idle) {
        self.idle = idle;
        self.idle_pos = 0;
    }

    /// Whether a queued prompt is playing.
    pub fn is_playing(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Whether anything but silence would be produced.
    pub fn is_active(&self) -> bool {
        self.is_playing() || matches!(self.idle, Idle::Loop(_))
    }

    /// The frame for this tick: the next frame of the current prompt, else the idle audio.
    pub fn next_frame(&mut self) -> Bytes {
        let n = self.ptime.samples();
        while let Some(p) = self.queue.front() {
            let all = p.encoded(self.codec);
            if self.pos < all.len() {
                let end = (self.pos + n).min(all.len());
                let frame = all.slice(self.pos..end);
                self.pos = end;
                return self.pad(frame);
            }
            self.queue.pop_front();
            self.pos = 0;
        }
        match &self.idle {
            Idle::Silence => self.codec.silence_frame(self.ptime),
            Idle::Loop(p) => {
                let all = p.encoded(self.codec).clone();
                if all.is_empty() {
                    return self.codec.silence_frame(self.ptime);
                }
                if self.idle_pos >= all.len() {
                    self.idle_pos = 0;
                }
                let end = (self.idle_pos + n).min(all.len());
                let mut frame = all.slice(self.idle_pos..end);
                self.idle_pos = end % all.len();
                if frame.len() < n {
                    // wrap seamlessly: continue from the start of the loop
                    let mut b = BytesMut::with_capacity(n);
                    b.extend_from_slice(&frame);
                    let rest = (n - frame.len()).min(all.len());
                    b.extend_from_slice(all.get(..rest).unwrap_or_default());
                    self.idle_pos = rest % all.len();
                    frame = b.freeze();
                }
                self.pad(frame)
            }
        }
    }

    fn pad(&self, frame: Bytes) -> Bytes {
        let n = self.ptime.samples();
        if frame.len() >= n {
            return frame;
        }
        let mut b = BytesMut::with_capacity(n);
        b.extend_from_slice(&frame);
        b.resize(n, self.codec.silence_byte());
        b.freeze()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub(crate) fn prompts_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../prompts")
    }

    #[test]
    fn loads_the_sample_prompts() {
        let required = [
            "welcome",
            "you-pressed",
            "digit-0",
            "digit-9",
            "digit-star",
            "digit-pound",
            "hold",
        ];
        let (lib, warnings) = PromptLibrary::load_dir(&prompts_dir(), &required).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(lib.len() >= 15, "{:?}", lib.names());
        let w = lib.get("welcome").unwrap();
        assert!(w.duration() > Duration::from_millis(500) && w.duration() < Duration::from_secs(5));
        assert_eq!(w.encoded(G711::Pcmu).len(), w.samples());
        // not silent
        let pcm = G711::Pcmu.decode(w.encoded(G711::Pcmu));
        let peak = pcm.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!(peak > 8000, "peak {peak}");
    }

    fn wav_16k_stereo() -> Vec<u8> {
        // a 0.5 s 16 kHz stereo 16-bit WAV: 1 kHz left, silence right
        let frames = 8000u32;
        let mut v = Vec::new();
        let data_len = frames * 4;
        v.extend_from_slice(b"RIFF");
        v.extend_from_slice(&(36 + data_len).to_le_bytes());
        v.extend_from_slice(b"WAVEfmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&2u16.to_le_bytes());
        v.extend_from_slice(&16000u32.to_le_bytes());
        v.extend_from_slice(&(16000u32 * 4).to_le_bytes());
        v.extend_from_slice(&4u16.to_le_bytes());
        v.extend_from_slice(&16u16.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&data_len.to_le_bytes());
        for i in 0..frames {
            let s = (f64::from(i) * 2.0 * std::f64::consts::PI * 1000.0 / 16000.0).sin() * 16000.0;
            v.extend_from_slice(&(s as i16).to_le_bytes());
            v.extend_from_slice(&0i16.to_le_bytes());
        }
        v
    }

    #[test]
    fn resamples_and_mixes_to_mono() {
        let p = Prompt::from_bytes(Path::new("tone.wav"), wav_16k_stereo()).unwrap();
        // 0.5 s at 8 kHz, ±1 frame of resampler edge
        assert!((3900..=4100).contains(&p.samples()), "{}", p.samples());
        let pcm = G711::Pcmu.decode(p.encoded(G711::Pcmu));
        // mono mix halves the left channel: peak ≈ 8000
        let peak = pcm[500..3500]
            .iter()
            .map(|s| s.unsigned_abs())
            .max()
            .unwrap();
        assert!((7000..=9000).contains(&peak), "peak {peak}");
    }

    #[test]
    fn library_errors_and_warnings() {
        let dir = std::env::temp_dir().join(format!("frontdoor-media-lib-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("good.wav"), wav_16k_stereo()).unwrap();
        std::fs::write(dir.join("broken.wav"), b"RIFF....not a wav at all").unwrap();
        std::fs::write(dir.join("notes.txt"), b"ignored").unwrap();
        let (lib, warnings) = PromptLibrary::load_dir(&dir, &["good"]).unwrap();
        assert_eq!(lib.names(), vec!["good"]);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].0.ends_with("broken.wav"));
        match PromptLibrary::load_dir(&dir, &["good", "broken"]) {
            Err(MediaError::Prompt { path, reason }) => {
                assert!(path.ends_with("broken.wav"));
                assert!(!reason.is_empty());
            }
            other => panic!("expected a prompt error, got {other:?}"),
        }
        assert!(matches!(
            PromptLibrary::load_dir(&dir, &["welcome"]),
            Err(MediaError::PromptMissing { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn player_frames_are_shared_slices_then_idle() {
        let pcm: Vec<i16> = (0..400).map(|i| (i * 50) as i16).collect();
        let p = Prompt::from_pcm("ramp", &pcm);
        let mut pl = PromptPlayer::new(G711::Pcmu, Ptime::DEFAULT);
        pl.play(p.clone());
        let f0 = pl.next_frame();
        // zero-copy: the frame points into the prompt's shared buffer
        assert_eq!(f0.as_ptr(), p.encoded(G711::Pcmu).as_ptr());
        let f1 = pl.next_frame();
        assert_eq!(f1.as_ptr(), p.encoded(G711::Pcmu)[160..].as_ptr());
        let f2 = pl.next_frame(); // 80 samples + padding
        assert_eq!(f2.len(), 160);
        assert_eq!(f2[100], 0xFF);
        assert!(!pl.is_playing() || pl.next_frame() == G711::Pcmu.silence_frame(Ptime::DEFAULT));
        assert_eq!(pl.next_frame(), G711::Pcmu.silence_frame(Ptime::DEFAULT));
        // hold loop wraps seamlessly
        pl.set_idle(Idle::Loop(p.clone()));
        let mut total = Vec::new();
        for _ in 0..10 {
            total.extend_from_slice(&pl.next_frame());
        }
        let enc = p.encoded(G711::Pcmu);
        for (i, b) in total.iter().enumerate() {
            assert_eq!(*b, enc[i % 400]);
        }
    }
}
