#!/usr/bin/env bash
# Regenerates the sample prompts in this directory.
# Requires: espeak-ng, sox  (apt-get install -y espeak-ng sox)
# Output: 8 kHz, mono, 16-bit signed PCM WAV.
set -euo pipefail
cd "$(dirname "$0")"

say() { # say <file> <text>
  local out="$1"; shift
  espeak-ng -v en-us -s 150 -w /tmp/frontdoor-prompt.$$.wav "$*"
  # resample to 8 kHz mono 16-bit, normalise to -3 dBFS, trim leading/trailing silence
  sox /tmp/frontdoor-prompt.$$.wav -r 8000 -c 1 -b 16 -e signed-integer "$out" \
      silence 1 0.02 1% reverse silence 1 0.02 1% reverse norm -3
  rm -f /tmp/frontdoor-prompt.$$.wav
}

say welcome.wav "Welcome to Frontdoor."
say you-pressed.wav "You pressed"
names=(zero one two three four five six seven eight nine)
for d in 0 1 2 3 4 5 6 7 8 9; do
  say "digit-$d.wav" "${names[$d]}"
done
say digit-star.wav "star"
say digit-pound.wav "pound"

# hold.wav: 4 s gentle loopable chord (A-major-ish triad, quiet, with a 0.5 Hz tremolo).
# Every frequency is a multiple of 0.25 Hz and the tremolo runs exactly 2 periods, so the
# waveform ends where it starts and loops without a click. All partials are < 697 Hz, so
# the hold music can never look like a DTMF tone.
sox -n -r 8000 -c 1 -b 16 -e signed-integer hold.wav \
    synth 4 sine 220 sine 277.25 sine 329.75 remix - tremolo 0.5 60 gain -n -12
