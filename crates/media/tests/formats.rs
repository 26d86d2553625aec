//! Prompt decoding of every supported container/codec, resampled to 8 kHz mono.
//! Fixtures (generated with sox 14.4.2): 0.5 s, 1 kHz sine at −6 dBFS —
//! `sox -n -r 44100 -c 2 -b 16 tone-44k1-stereo.flac synth 0.5 sine 1000 gain -6`,
//! likewise `.ogg` (Vorbis) and `-r 48000 -c 1 tone-48k-mono.mp3`.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use frontdoor_media::g711::G711;
use frontdoor_media::prompt::Prompt;

fn check(file: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(file);
    let p = Prompt::load(&path).unwrap();
    let ms = p.duration().as_millis();
    // MP3 adds encoder delay/padding; allow a little
    assert!((480..=560).contains(&ms), "{file}: {ms} ms");
    let pcm = G711::Pcmu.decode(p.encoded(G711::Pcmu));
    // 1 kHz at 8 kHz: 2 zero crossings per 8 samples → 250 per 1000 samples
    let mid = &pcm[1000..3000];
    let crossings = mid.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    assert!(
        (490..=510).contains(&crossings),
        "{file}: {crossings} crossings"
    );
    let peak = mid.iter().map(|s| s.unsigned_abs()).max().unwrap();
    // −6 dBFS ≈ 16400 peak (stereo identical channels mix to the same level)
    assert!((14000..=18500).contains(&peak), "{file}: peak {peak}");
}

#[test]
fn flac_44k1_stereo() {
    check("tone-44k1-stereo.flac");
}

#[test]
fn ogg_vorbis_44k1_stereo() {
    check("tone-44k1-stereo.ogg");
}

#[test]
fn mp3_48k_mono() {
    check("tone-48k-mono.mp3");
}
