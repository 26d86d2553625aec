//! What the dialplan expects the caller to say, and the mapping of a free transcript onto it.
//!
//! Whisper transcribes freely; a telephone menu only cares about a handful of answers. An
//! [`Expectation`] lists them (intents with example phrases, a digit string, yes/no). It is used
//! twice: as Whisper's initial prompt, to bias the decoder towards those words, and afterwards to
//! score the transcript against every alternative ([`Expectation::interpret`]). The best
//! alternative is accepted when its score reaches the reject threshold and is not too close to
//! a different runner-up.

/// One intent: a name reported to the dialplan and the example phrases that express it.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    /// Reported in [`Interpretation::Intent`].
    pub name: String,
    /// Example utterances ("I lost my card", "my card was stolen").
    pub phrases: Vec<String>,
}

/// What a transcript was understood as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interpretation {
    /// An intent, by name.
    Intent(String),
    /// A digit string ("1234").
    Digits(String),
    /// Yes / agreement.
    Yes,
    /// No / refusal.
    No,
}

/// A scored interpretation.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// What was understood.
    pub interpretation: Interpretation,
    /// 0..=1: how well the transcript fits it.
    pub score: f32,
}

/// The result of interpreting a transcript.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Nothing was said (no speech detected, or a blank transcript).
    NoInput,
    /// Something was said but it matched nothing well enough (the best guess, if any).
    NoMatch(Option<Hypothesis>),
    /// Accepted.
    Match(Hypothesis),
}

/// The answers a prompt expects. Build with the chained methods.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    /// Intents, in order of preference for the prompt.
    pub intents: Vec<Intent>,
    /// Accept a digit string of this many digits (inclusive range).
    pub digits: Option<(usize, usize)>,
    /// Accept yes / no.
    pub yes_no: bool,
    /// Reject (no match) below this score.
    pub reject_below: f32,
    /// Reject when a different runner-up scores within this margin of the best.
    pub min_margin: f32,
    /// Intent classifier ([`crate::nlu`]): when set, it scores the intents (its class
    /// probabilities) instead of the phrase matcher; digits and yes/no are unchanged.
    pub classifier: Option<std::sync::Arc<crate::nlu::Classifier>>,
}

/// Phrases per intent in Whisper's initial prompt ([`Expectation::prompt`]): one, so the
/// hotline's prompt stays about 25 tokens (a longer prompt multiplies decode time; measured
/// on held-out v4 in round 5: no prompt 63/72, one phrase per intent 64/72, docs/speech.md).
pub const PROMPT_PHRASES: usize = 1;

impl Default for Expectation {
    fn default() -> Self {
        Self {
            intents: Vec::new(),
            digits: None,
            yes_no: false,
            reject_below: 0.6,
            min_margin: 0.05,
            classifier: None,
        }
    }
}

const DIGIT_WORDS: &[(&str, char)] = &[
    ("zero", '0'),
    ("oh", '0'),
    ("o", '0'),
    ("one", '1'),
    ("won", '1'),
    ("two", '2'),
    ("to", '2'),
    ("too", '2'),
    ("three", '3'),
    ("four", '4'),
    ("for", '4'),
    ("five", '5'),
    ("six", '6'),
    ("seven", '7'),
    ("eight", '8'),
    ("ate", '8'),
    ("nine", '9'),
];
const YES_WORDS: &[&str] = &[
    "yes",
    "yeah",
    "yep",
    "yup",
    "ya",
    "yea",
    "sure",
    "correct",
    "right",
    "affirmative",
    "ok",
    "okay",
    "absolutely",
    "definitely",
    "certainly",
];
const NO_WORDS: &[&str] = &[
    "no",
    "nope",
    "nah",
    "not",
    "negative",
    "incorrect",
    "wrong",
    "never",
    "dont",
];
/// Transcripts Whisper produces for non-speech.
const NON_SPEECH: &[&str] = &[
    "blank audio",
    "silence",
    "music",
    "noise",
    "inaudible",
    "no speech",
];

impl Expectation {
    /// An empty expectation (matches nothing until alternatives are added).
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an intent with example phrases.
    #[must_use]
    pub fn intent(mut self, name: &str, phrases: &[&str]) -> Self {
        self.intents.push(Intent {
            name: name.to_owned(),
            phrases: phrases.iter().map(|p| (*p).to_owned()).collect(),
        });
        self
    }

    /// Accept a digit string of `min..=max` digits.
    #[must_use]
    pub fn digits(mut self, min: usize, max: usize) -> Self {
        self.digits = Some((min, max.max(min)));
        self
    }

    /// Accept yes / no.
    #[must_use]
    pub fn yes_no(mut self) -> Self {
        self.yes_no = true;
        self
    }

    /// Score the intents with a trained classifier (see [`crate::nlu::shared_classifier`]).
    #[must_use]
    pub fn classifier(mut self, classifier: std::sync::Arc<crate::nlu::Classifier>) -> Self {
        self.classifier = Some(classifier);
        self
    }

    /// Set the reject threshold (default 0.6).
    #[must_use]
    pub fn reject_below(mut self, threshold: f32) -> Self {
        self.reject_below = threshold;
        self
    }

    /// Whisper initial prompt: the expected wording, as if said before: the first
    /// [`PROMPT_PHRASES`] phrases of every intent (Whisper keeps only the last 224 prompt
    /// tokens, and a long prompt costs decoding time; every phrase still counts for matching).
    pub fn prompt(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for i in &self.intents {
            for p in i.phrases.iter().take(PROMPT_PHRASES) {
                parts.push(sentence(p));
            }
        }
        if self.yes_no {
            parts.push("Yes.".into());
            parts.push("No.".into());
        }
        if self.digits.is_some() {
            // Digits as Whisper writes them, space-separated. A fixed, non-sequential example:
            // "1 2 3 4" made tiny.en read "five nine zero seven" as "5.0.0.0" (see docs/speech.md).
            parts.push("4 7 0 9.".into());
        }
        parts.join(" ")
    }

    /// Score `transcript` against every alternative, best first.
    pub fn interpret(&self, transcript: &str) -> Vec<Hypothesis> {
        let words = normalize(transcript);
        let mut out = Vec::new();
        if words.is_empty() {
            return out;
        }
        if let Some(c) = &self.classifier {
            for (class, p) in c.classify(transcript) {
                if class != crate::nlu::NONE && self.intents.iter().any(|i| i.name == class) {
                    out.push(Hypothesis {
                        interpretation: Interpretation::Intent(class),
                        score: p,
                    });
                }
            }
        }
        let vocab = IntentVocab::new(&self.intents);
        let content = content_stems(&words);
        for (i, intent) in self.intents.iter().enumerate() {
            if self.classifier.is_some() {
                break;
            }
            let best = intent
                .phrases
                .iter()
                .map(|p| phrase_score(&words, &normalize(p)))
                .fold(0.0f32, f32::max)
                .max(vocab.score(i, &content));
            if best > 0.0 {
                out.push(Hypothesis {
                    interpretation: Interpretation::Intent(intent.name.clone()),
                    score: best,
                });
            }
        }
        if let Some((min, max)) = self.digits
            && let Some((digits, score)) = digit_score(&words)
        {
            // the right number of digits is strong evidence even among filler words ("my pin is ...")
            let score = if (min..=max).contains(&digits.len()) {
                0.4 + 0.6 * score * score
            } else {
                0.4 * score
            };
            out.push(Hypothesis {
                interpretation: Interpretation::Digits(digits),
                score,
            });
        }
        if self.yes_no {
            let yes = words
                .iter()
                .filter(|w| YES_WORDS.contains(&w.as_str()))
                .count();
            let no = words
                .iter()
                .filter(|w| NO_WORDS.contains(&w.as_str()))
                .count();
            let n = words.len() as f32;
            // a lone "yes" scores 1; extra words lower it gently; mixed yes/no is ambiguous
            let s = |hits: usize, other: usize| {
                if hits == 0 {
                    0.0
                } else if other > 0 {
                    0.3
                } else {
                    0.6 + 0.4 * (hits as f32 / n)
                }
            };
            if yes > 0 {
                out.push(Hypothesis {
                    interpretation: Interpretation::Yes,
                    score: s(yes, no),
                });
            }
            if no > 0 {
                out.push(Hypothesis {
                    interpretation: Interpretation::No,
                    score: s(no, yes),
                });
            }
        }
        out.sort_by(|a, b| b.score.total_cmp(&a.score));
        out
    }

    /// Decide on a transcript: no input, no match, or the accepted interpretation.
    pub fn decide(&self, transcript: &str) -> Outcome {
        self.decide_weighted(transcript, 1.0)
    }

    /// Decide on several readings of one utterance (e.g. a repetitive transcript and its
    /// repetition unit): the best accepted reading, else the best rejected one.
    pub fn decide_best(&self, readings: &[&str], weight: f32) -> Outcome {
        let rank = |o: &Outcome| match o {
            Outcome::Match(h) => 2.0 + h.score,
            Outcome::NoMatch(Some(h)) => 1.0 + h.score,
            Outcome::NoMatch(None) => 1.0,
            Outcome::NoInput => 0.0,
        };
        readings
            .iter()
            .map(|r| self.decide_weighted(r, weight))
            .fold(Outcome::NoInput, |best, o| {
                if rank(&o) > rank(&best) { o } else { best }
            })
    }

    /// [`decide`](Self::decide) with every score multiplied by `weight` (the recognizer passes
    /// 0.8 for a suspect transcript: too long for the speech and not a clean repetition).
    pub fn decide_weighted(&self, transcript: &str, weight: f32) -> Outcome {
        let words = normalize(transcript);
        if words.is_empty() || is_non_speech(&words) {
            return Outcome::NoInput;
        }
        let mut hyps = self.interpret(transcript);
        hyps.iter_mut().for_each(|h| h.score *= weight);
        let Some(best) = hyps.first().cloned() else {
            return Outcome::NoMatch(None);
        };
        let ambiguous = hyps.iter().skip(1).any(|h| {
            h.interpretation != best.interpretation && best.score - h.score < self.min_margin
        });
        if best.score < self.reject_below || ambiguous {
            Outcome::NoMatch(Some(best))
        } else {
            Outcome::Match(best)
        }
    }
}

fn sentence(p: &str) -> String {
    let mut s = p.trim().to_owned();
    if let Some(f) = s.get(0..1) {
        s.replace_range(0..1, &f.to_uppercase());
    }
    if !s.ends_with(['.', '?', '!']) {
        s.push('.');
    }
    s
}

/// Lower-case words; punctuation splits words, apostrophes vanish ("I'm" -> "im").
pub fn normalize(text: &str) -> Vec<String> {
    let mut cleaned = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\'' || c == '\u{2019}' {
            continue;
        }
        if c.is_alphanumeric() {
            cleaned.extend(c.to_lowercase());
        } else {
            cleaned.push(' ');
        }
    }
    cleaned.split_whitespace().map(str::to_owned).collect()
}

fn is_non_speech(words: &[String]) -> bool {
    let joined = words.join(" ");
    NON_SPEECH.contains(&joined.as_str())
}

fn levenshtein(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// 1 - normalised edit distance.
fn similarity(a: &str, b: &str) -> f32 {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let n = a.len().max(b.len());
    if n == 0 {
        return 1.0;
    }
    1.0 - levenshtein(&a, &b) as f32 / n as f32
}

/// Similarity of a transcript to one example phrase: the better of whole-string similarity and
/// a recall-weighted (F2) fuzzy word overlap, so "uh I think I lost my card" still fits
/// "I lost my card" well.
fn phrase_score(words: &[String], phrase: &[String]) -> f32 {
    if phrase.is_empty() {
        return 0.0;
    }
    let whole = similarity(&words.join(" "), &phrase.join(" "));
    let word_match = |w: &String, pool: &[String]| {
        pool.iter()
            .map(|p| similarity(w, p))
            .fold(0.0f32, f32::max)
            .max(0.0)
    };
    let credit = |s: f32| if s >= 0.75 { s } else { 0.0 };
    let recall = phrase
        .iter()
        .map(|p| credit(word_match(p, words)))
        .sum::<f32>()
        / phrase.len() as f32;
    let precision = words
        .iter()
        .map(|w| credit(word_match(w, phrase)))
        .sum::<f32>()
        / words.len() as f32;
    let f2 = if recall + precision > 0.0 {
        5.0 * precision * recall / (4.0 * precision + recall)
    } else {
        0.0
    };
    whole.max(f2)
}

/// Function words: they carry no intent and are left out of the keyword score.
const STOP_WORDS: &[&str] = &[
    "a", "about", "all", "am", "an", "and", "any", "are", "as", "at", "be", "been", "but", "by",
    "can", "could", "did", "do", "does", "for", "from", "get", "give", "go", "going", "gonna",
    "got", "had", "has", "have", "hello", "here", "hi", "how", "i", "id", "if", "ill", "im", "in",
    "is", "it", "its", "ive", "just", "know", "let", "like", "make", "may", "me", "might", "my",
    "need", "now", "of", "oh", "ok", "okay", "on", "or", "please", "really", "right", "shall",
    "should", "so", "some", "sorry", "tell", "thank", "thanks", "that", "thats", "the", "then",
    "there", "theres", "think", "this", "to", "today", "uh", "um", "up", "us", "very", "wanna",
    "want", "was", "we", "well", "went", "what", "were", "will", "with", "would", "yeah", "yes",
    "you", "youre", "your", "rather", "must",
];

/// Small generic thesaurus for phone requests: every word of a group counts as the group's
/// first word (after stemming). It lets "somebody took my wallet" meet "someone stole my
/// purse", without a language model. Domain wording belongs in the dialplan's phrases.
const SYNONYMS: &[&[&str]] = &[
    &["speak", "talk", "chat"],
    &["someone", "somebody", "anyone", "anybody"],
    &[
        "person",
        "people",
        "human",
        "operator",
        "representative",
        "agent",
    ],
    &["call", "phone", "ring"],
    &[
        "steal", "stole", "stolen", "took", "taken", "nick", "nicked", "rob", "robbed",
    ],
    &[
        "lose", "lost", "misplace", "miss", "missing", "gone", "find",
    ],
    &["wallet", "purse"],
    &["close", "shut"],
    &["open", "opening"],
    &["money", "cash", "fund", "funds"],
    &["bill", "invoice"],
    &["pay", "paid", "payment", "paying", "settle", "owe", "repay"],
    &["block", "cancel", "freeze", "stop"],
];

/// Light suffix stripping (`payments` -> `payment`, `closed` -> `clos`, `stolen` stays) and
/// the thesaurus: the form every keyword is compared in. A thesaurus word meets its group
/// both as written and as stripped (`close`, `closed`, `closing` and `shut` are all `close`).
fn stem(word: &str) -> String {
    if let Some(group) = SYNONYMS.iter().find(|g| g.contains(&word)) {
        return group[0].to_owned();
    }
    let w = strip_suffix(word);
    match SYNONYMS
        .iter()
        .find(|g| g.iter().any(|s| *s == w || strip_suffix(s) == w))
    {
        Some(group) => group[0].to_owned(),
        None => w,
    }
}

/// `payments` -> `payment`, `closed` / `close` -> `clos`, `hours` -> `hour`.
fn strip_suffix(word: &str) -> String {
    let mut w = word.to_owned();
    for suffix in ["ing", "ed", "es", "s"] {
        if w.len() >= suffix.len() + 3 && w.ends_with(suffix) && !w.ends_with("ss") {
            w.truncate(w.len() - suffix.len());
            break;
        }
    }
    if w.len() >= 4 && w.ends_with('e') {
        w.pop();
    }
    w
}

/// The content words of a normalised utterance, stemmed, without repeats.
fn content_stems(words: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in words {
        if STOP_WORDS.contains(&w.as_str()) {
            continue;
        }
        let s = stem(w);
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Keyword score: every intent's vocabulary is the stemmed content words of its phrases. A
/// keyword shared by `k` intents weighs `1/k`; a transcript word no intent knows weighs 1.
/// An intent scores `0.9 x` the weighted share of the transcript's content words it explains,
/// so a caller's own wording ("somebody took my wallet") lands when its content words are
/// known, and an unrelated sentence, whose words mostly are not, stays low. Words match
/// exactly after stemming, or with similarity >= 0.8 when both have 5 letters or more.
///
/// A shared keyword that one intent owns (at least [`OWNER_SHARE`] of the phrases that contain
/// it are that intent's, `n_i / sum n`) explains its weight in full to the owner and only
/// `n_j / sum n` of it to the others: "balance" in eleven balance phrases and one payment
/// phrase ("pay the card balance") counts fully for balance and a twelfth for payment, so
/// "give me my balance" is no longer a tie. A keyword no intent owns ("someone": two agent
/// phrases, one callback phrase) counts fully for every intent that knows it, so a
/// transcript that rests on it stays ambiguous and is rejected.
struct IntentVocab {
    /// Per intent: each keyword and the number of its phrases that contain it.
    vocab: Vec<Vec<(String, usize)>>,
}

impl IntentVocab {
    fn new(intents: &[Intent]) -> Self {
        let vocab = intents
            .iter()
            .map(|i| {
                let mut v: Vec<(String, usize)> = Vec::new();
                for p in &i.phrases {
                    for s in content_stems(&normalize(p)) {
                        match v.iter_mut().find(|(k, _)| *k == s) {
                            Some((_, n)) => *n += 1,
                            None => v.push((s, 1)),
                        }
                    }
                }
                v
            })
            .collect();
        Self { vocab }
    }

    fn matches(k: &str, word: &str) -> bool {
        k == word || (k.len() >= 5 && word.len() >= 5 && similarity(k, word) >= 0.8)
    }

    /// How many of an intent's phrases contain `word` (0: the intent does not know it).
    fn uses(v: &[(String, usize)], word: &str) -> usize {
        v.iter()
            .filter(|(k, _)| Self::matches(k, word))
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
    }

    #[cfg(test)]
    fn weight(&self, word: &str) -> f32 {
        let k = self
            .vocab
            .iter()
            .filter(|v| Self::uses(v, word) > 0)
            .count();
        1.0 / k.max(1) as f32
    }

    fn score(&self, intent: usize, content: &[String]) -> f32 {
        if intent >= self.vocab.len() {
            return 0.0;
        }
        let (mut explained, mut total) = (0.0f32, 0.0f32);
        for w in content {
            let uses: Vec<usize> = self.vocab.iter().map(|v| Self::uses(v, w)).collect();
            let k = uses.iter().filter(|&&n| n > 0).count();
            let weight = 1.0 / k.max(1) as f32;
            total += weight;
            let mine = uses.get(intent).copied().unwrap_or(0);
            if mine > 0 {
                let all = uses.iter().sum::<usize>() as f32;
                let top = uses.iter().copied().max().unwrap_or(0) as f32;
                let owned_by_other = top / all >= OWNER_SHARE && (mine as f32) < top;
                explained += if owned_by_other {
                    weight * mine as f32 / all
                } else {
                    weight
                };
            }
        }
        if total == 0.0 {
            return 0.0;
        }
        0.9 * explained / total
    }
}

/// Share of a keyword's phrases (over all intents) from which one intent owns it.
const OWNER_SHARE: f32 = 0.75;

/// Words that often surround a spoken number and say nothing against it.
const DIGIT_FILLERS: &[&str] = &[
    "my", "pin", "is", "its", "it", "the", "number", "code", "account", "card", "phone", "um",
    "uh", "er", "and", "please", "thats", "that", "zip", "postal", "id",
];

/// Digits in the transcript and the share of (non-filler) words that were digits.
fn digit_score(words: &[String]) -> Option<(String, f32)> {
    let mut digits = String::new();
    let (mut digit_words, mut other_words) = (0usize, 0usize);
    for w in words {
        if w.chars().all(|c| c.is_ascii_digit()) {
            digits.push_str(w);
            digit_words += 1;
        } else if let Some((_, d)) = DIGIT_WORDS.iter().find(|(name, _)| name == w) {
            digits.push(*d);
            digit_words += 1;
        } else if !DIGIT_FILLERS.contains(&w.as_str()) {
            other_words += 1;
        }
    }
    if digits.is_empty() {
        return None;
    }
    Some((
        digits,
        digit_words as f32 / (digit_words + other_words) as f32,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bank() -> Expectation {
        Expectation::new()
            .intent(
                "lost_card",
                &["I lost my card", "my card was stolen", "block my card"],
            )
            .intent("balance", &["check my balance", "how much money do I have"])
            .intent("agent", &["speak to an agent", "talk to a person"])
    }

    fn accepted(o: &Outcome) -> Option<&Interpretation> {
        match o {
            Outcome::Match(h) => Some(&h.interpretation),
            _ => None,
        }
    }

    #[test]
    fn intents_exact_and_paraphrased() {
        let e = bank();
        assert_eq!(
            accepted(&e.decide("I lost my card.")),
            Some(&Interpretation::Intent("lost_card".into()))
        );
        assert_eq!(
            accepted(&e.decide("Uh, I think I lost my card")),
            Some(&Interpretation::Intent("lost_card".into()))
        );
        assert_eq!(
            accepted(&e.decide("I'd like to check my balance")),
            Some(&Interpretation::Intent("balance".into()))
        );
        assert_eq!(
            accepted(&e.decide("Speak to an agent please")),
            Some(&Interpretation::Intent("agent".into()))
        );
        // a near-miss transcription still lands
        assert_eq!(
            accepted(&e.decide("I lost my cart")),
            Some(&Interpretation::Intent("lost_card".into()))
        );
    }

    #[test]
    fn keyword_score_uses_stems_synonyms_and_shared_word_weights() {
        assert_eq!(stem("payments"), "pay");
        assert_eq!(stem("stolen"), "steal");
        assert_eq!(stem("somebody"), "someone");
        assert_eq!(stem("purse"), "wallet");
        assert_eq!(stem("hours"), "hour");
        // a thesaurus word meets its group written or stripped
        for w in ["close", "closed", "closing", "closes", "shut"] {
            assert_eq!(stem(w), "close", "{w}");
        }
        assert_eq!(stem("owe"), "pay");
        assert_eq!(
            content_stems(&normalize("I'd like to speak with somebody please")),
            ["speak", "someone"]
        );
        let e = Expectation::new()
            .intent("lost_card", &["my card was stolen", "someone took my card"])
            .intent("payment", &["pay my credit card"])
            .intent("agent", &["talk to a human"]);
        let vocab = IntentVocab::new(&e.intents);
        // "card" is known to two intents: half weight
        assert!((vocab.weight("card") - 0.5).abs() < 1e-6);
        assert!((vocab.weight("taxi") - 1.0).abs() < 1e-6);
        // the caller's own words, none of them an example phrase
        assert_eq!(
            accepted(&e.decide("Somebody stole my card yesterday.")),
            Some(&Interpretation::Intent("lost_card".into()))
        );
        assert_eq!(
            accepted(&e.decide("Can I speak to an operator?")),
            Some(&Interpretation::Intent("agent".into()))
        );
        // a keyword shared unevenly counts mostly for the intent that uses it most
        let shared = Expectation::new()
            .intent(
                "balance",
                &["check my balance", "account balance", "bank balance"],
            )
            .intent("payment", &["make a payment", "pay the card balance"]);
        assert_eq!(
            accepted(&shared.decide("And you give me my balance.")),
            Some(&Interpretation::Intent("balance".into()))
        );
        let sv = IntentVocab::new(&shared.intents);
        let content = content_stems(&normalize("my balance"));
        // "balance": 3 of its 4 phrases are balance's (owned, 0.75): full; payment gets 1/4
        assert!((sv.score(0, &content) - 0.9).abs() < 1e-6);
        assert!((sv.score(1, &content) - 0.9 * 0.25).abs() < 1e-6);
        // a keyword nobody owns stays a tie (rejected)
        let tie = Expectation::new()
            .intent(
                "agent",
                &["speak to someone", "speak with somebody", "an agent"],
            )
            .intent("callback", &["could somebody get back to me"]);
        assert!(matches!(
            tie.decide("And somebody for me."),
            Outcome::NoMatch(_)
        ));
        // unknown content words keep unrelated sentences low
        let content = content_stems(&normalize("I need a taxi to the airport"));
        assert!(vocab.score(0, &content) < 0.3);
        assert!(matches!(
            e.decide("I need a taxi to the airport"),
            Outcome::NoMatch(_)
        ));
    }

    #[test]
    fn unrelated_speech_is_no_match() {
        let e = bank();
        assert!(
            matches!(e.decide("The weather is nice today"), Outcome::NoMatch(_)),
            "{:?}",
            e.decide("The weather is nice today")
        );
    }

    #[test]
    fn blank_and_non_speech_are_no_input() {
        let e = bank().yes_no();
        assert_eq!(e.decide(""), Outcome::NoInput);
        assert_eq!(e.decide(" [BLANK_AUDIO]"), Outcome::NoInput);
        assert_eq!(e.decide("(silence)"), Outcome::NoInput);
        assert_eq!(e.decide("..."), Outcome::NoInput);
    }

    #[test]
    fn digits_in_all_spellings() {
        let e = Expectation::new().digits(4, 4);
        for t in [
            "1234",
            "1, 2, 3, 4.",
            "one two three four",
            "1-2-3-4",
            "12 34",
            "One, two, three, four.",
        ] {
            assert_eq!(
                accepted(&e.decide(t)),
                Some(&Interpretation::Digits("1234".into())),
                "{t}"
            );
        }
        assert_eq!(
            accepted(&e.decide("oh eight one five")),
            Some(&Interpretation::Digits("0815".into()))
        );
        assert_eq!(
            accepted(&e.decide("My pin is 4 4 1 2.")),
            Some(&Interpretation::Digits("4412".into()))
        );
        assert!(matches!(
            e.decide("5.0.0.0.0.0.0.0.0"),
            Outcome::NoMatch(Some(_))
        ));
        assert_eq!(
            accepted(&e.decide("My pin in 4 4 1 2.")),
            Some(&Interpretation::Digits("4412".into()))
        );
        // several readings: the one that fits wins; a PIN stays a PIN
        assert_eq!(
            accepted(&e.decide_best(&["1 2 3 4 1 2 3 4", "1 2 3 4"], 1.0)),
            Some(&Interpretation::Digits("1234".into()))
        );
        assert_eq!(
            accepted(&e.decide_best(&["1 2 1 2", "1 2"], 1.0)),
            Some(&Interpretation::Digits("1212".into()))
        );
        // noise around the right number of digits is not accepted
        assert!(matches!(
            e.decide("2 nero 2x 2 nero 2x 2 nero 2"),
            Outcome::NoMatch(_)
        ));
        // a looping decoder's noise around the right number of digits is not accepted
        assert!(matches!(
            e.decide_weighted("2 nero 2x 2 nero 2x 2 nero 2", 0.8),
            Outcome::NoMatch(_)
        ));
        // wrong length: best guess reported but rejected
        assert!(matches!(e.decide("1 2 3"), Outcome::NoMatch(Some(_))));
    }

    #[test]
    fn yes_no() {
        let e = Expectation::new().yes_no();
        assert_eq!(accepted(&e.decide("Yes.")), Some(&Interpretation::Yes));
        assert_eq!(
            accepted(&e.decide("Yeah, that's right")),
            Some(&Interpretation::Yes)
        );
        assert_eq!(accepted(&e.decide("No.")), Some(&Interpretation::No));
        assert_eq!(accepted(&e.decide("Nope")), Some(&Interpretation::No));
        assert!(matches!(e.decide("yes no"), Outcome::NoMatch(_)));
        assert!(matches!(e.decide("banana"), Outcome::NoMatch(None)));
    }

    #[test]
    fn prompt_lists_the_expected_wording() {
        let p = bank().yes_no().digits(4, 4).prompt();
        // the first phrase of every intent: a short prompt (decode time grows with it)
        assert!(
            p.starts_with("I lost my card. Check my balance. Speak to an agent. Yes."),
            "{p}"
        );
        assert!(p.contains("Yes. No."), "{p}");
        assert!(p.ends_with("4 7 0 9."), "{p}");
    }
}
