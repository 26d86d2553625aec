//! Intent classifier: multinomial logistic regression over sparse n-gram features and a dense
//! sentence embedding, with an explicit `none` class.
//!
//! The phrase matcher of [`crate::grammar`] only knows the words of its example phrases; callers
//! use their own ("somebody took my wallet"). The classifier generalises in two ways:
//!
//! * **word embeddings** (wordllama `l2_supercat_256`, MIT: 32 000 Llama-2 BPE token vectors of
//!   256 dimensions, fetched by `scripts/models/fetch` into `models/wordllama/`). A sentence is
//!   the L2-normalised mean of its tokens' vectors ([`Embedder`]), so "purse", "wallet" and
//!   "pickpocket" lie close without a hand-written thesaurus;
//! * **sparse features**: word unigrams and bigrams and character 3..5-grams of each word
//!   (hashed), for exact wording and misspelt transcripts ("cart" for "card").
//!
//! An explicit `none` class, trained on out-of-domain sentences (card *problems*, other banking
//! requests, chit-chat), lets the model say "none of these" instead of picking the closest
//! intent. Training runs at dialplan load: deterministic SGD (fixed order, fixed seed), about
//! a thousand sentences in well under a second; classifying one utterance takes well under a
//! millisecond.
//!
//! Training data: a TOML file named by the step's `training` key (see
//! dialplans/intents/hotline-en.toml): `[intents]` name = [sentences], `[none]` sentences = [...].
//! The step's own `phrases` are training sentences too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{FETCH_HINT, SpeechError};

/// Token embeddings inside the models folder.
pub const EMBED_WEIGHTS: &str = "wordllama/l2_supercat_256.safetensors";
/// The tokenizer (HuggingFace tokenizers JSON, Llama-2 BPE) inside the models folder.
pub const EMBED_TOKENIZER: &str = "wordllama/l2_supercat_tokenizer_config.json";
/// Name of the reject class in [`Classifier::classify`].
pub const NONE: &str = "none";

/// Hashed sparse feature space (2^18 buckets).
const BUCKETS: usize = 1 << 18;
/// Weight of the dense embedding next to the (unit-norm) sparse features.
const EMBED_WEIGHT: f32 = 1.5;
/// SGD: epochs, initial learning rate, L2 penalty (applied to the weights a sample touches).
const EPOCHS: usize = 30;
const LEARNING_RATE: f32 = 0.5;
const L2: f32 = 1e-4;

/// Sentence embeddings: Llama-2 BPE tokens -> mean of their vectors -> L2 normalised.
pub struct Embedder {
    /// HuggingFace `tokenizers` with the package's tokenizer JSON.
    tokenizer: tokenizers::Tokenizer,
    dim: usize,
    /// `rows x dim`, row-major.
    table: Vec<f32>,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("vocab", &self.tokenizer.get_vocab_size(true))
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

fn missing(path: &Path, source: std::io::Error) -> SpeechError {
    SpeechError::ModelMissing {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> SpeechError {
    SpeechError::ModelCorrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl Embedder {
    /// Load [`EMBED_WEIGHTS`] and [`EMBED_TOKENIZER`] from a models folder. A missing file is
    /// [`SpeechError::ModelMissing`], whose message names `scripts/models/fetch`.
    pub fn load(models: &Path) -> Result<Self, SpeechError> {
        let tok_path = models.join(EMBED_TOKENIZER);
        let weights_path = models.join(EMBED_WEIGHTS);
        let tok = std::fs::read(&tok_path).map_err(|e| missing(&tok_path, e))?;
        let weights = std::fs::read(&weights_path).map_err(|e| missing(&weights_path, e))?;
        let tokenizer = tokenizers::Tokenizer::from_bytes(&tok)
            .map_err(|e| corrupt(&tok_path, format!("tokenizer: {e}")))?;
        let (dim, table) = read_safetensors_f16(&weights_path, &weights)?;
        if tokenizer.get_vocab_size(true) * dim > table.len() {
            return Err(corrupt(
                &weights_path,
                "fewer rows than the tokenizer's vocabulary",
            ));
        }
        Ok(Self {
            tokenizer,
            dim,
            table,
        })
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Token ids of `text`, without special tokens (the package's Llama-2 BPE: "▁" for spaces
    /// and in front, merges by rank, bytes for unknown characters).
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
    }

    /// The sentence embedding of `text` (unit length; all zeros for an empty text).
    pub fn embed(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; self.dim];
        if text.trim().is_empty() {
            return v;
        }
        for id in self.tokenize(text) {
            let at = id as usize * self.dim;
            if let Some(row) = self.table.get(at..at + self.dim) {
                v.iter_mut().zip(row).for_each(|(a, b)| *a += b);
            }
        }
        normalize_l2(&mut v);
        v
    }
}

fn normalize_l2(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// The single 2-D F16 tensor of a safetensors file -> (columns, values as f32).
fn read_safetensors_f16(path: &Path, bytes: &[u8]) -> Result<(usize, Vec<f32>), SpeechError> {
    let file = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| corrupt(path, format!("safetensors: {e}")))?;
    let names = file.names();
    let [name] = names.as_slice() else {
        return Err(corrupt(path, "want one 2-D tensor"));
    };
    let tensor = file
        .tensor(name)
        .map_err(|e| corrupt(path, format!("safetensors: {e}")))?;
    if tensor.dtype() != safetensors::Dtype::F16 {
        return Err(corrupt(path, "the embedding tensor is not F16"));
    }
    let &[rows, cols] = tensor.shape() else {
        return Err(corrupt(path, "want one 2-D tensor"));
    };
    let data = tensor.data();
    if data.len() != rows * cols * 2 {
        return Err(corrupt(path, "tensor data out of bounds"));
    }
    let values = data
        .chunks_exact(2)
        .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
        .collect();
    Ok((cols, values))
}

/// Callers' filler words, dropped before classification.
const FILLERS: &[&str] = &[
    "um", "uh", "umm", "uhm", "er", "erm", "hmm", "mm", "ah", "eh",
];

/// Transcript clean-up shared by training and classification: lower case, contractions
/// spelt out ("can't" -> "can not", "I'm" -> "i am"), punctuation dropped, fillers removed
/// ("um", "uh", and "like" unless it is the verb: "I'd like", "would like").
pub fn clean(text: &str) -> String {
    let lower = text.to_lowercase().replace('\u{2019}', "'");
    let mut words: Vec<String> = Vec::new();
    for raw in lower.split(|c: char| !(c.is_alphanumeric() || c == '\'')) {
        let w = raw.trim_matches('\'');
        if w.is_empty() {
            continue;
        }
        let expanded: &[&str] = match w {
            "can't" | "cant" => &["can", "not"],
            "won't" => &["will", "not"],
            "ain't" => &["is", "not"],
            _ => &[],
        };
        if !expanded.is_empty() {
            words.extend(expanded.iter().map(|s| (*s).to_owned()));
            continue;
        }
        let (stem, tail): (&str, Option<&str>) = if let Some(s) = w.strip_suffix("n't") {
            (s, Some("not"))
        } else if let Some(s) = w.strip_suffix("'m") {
            (s, Some("am"))
        } else if let Some(s) = w.strip_suffix("'re") {
            (s, Some("are"))
        } else if let Some(s) = w.strip_suffix("'ve") {
            (s, Some("have"))
        } else if let Some(s) = w.strip_suffix("'ll") {
            (s, Some("will"))
        } else if let Some(s) = w.strip_suffix("'d") {
            (s, Some("would"))
        } else if let Some(s) = w.strip_suffix("'s") {
            (s, None)
        } else {
            (w, None)
        };
        let stem = stem.replace('\'', "");
        if !stem.is_empty() {
            words.push(stem);
        }
        if let Some(t) = tail {
            words.push(t.to_owned());
        }
    }
    let mut out: Vec<&str> = Vec::with_capacity(words.len());
    for (i, w) in words.iter().enumerate() {
        if FILLERS.contains(&w.as_str()) {
            continue;
        }
        if w == "like" {
            let prev = i
                .checked_sub(1)
                .and_then(|p| words.get(p))
                .map(String::as_str);
            if !matches!(
                prev,
                Some("would" | "i" | "we" | "you" | "they" | "not" | "do" | "really")
            ) {
                continue;
            }
        }
        out.push(w);
    }
    out.join(" ")
}

/// FNV-1a over the parts (each ended by 0xff).
fn fnv64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The feature bucket of the parts.
fn fnv(parts: &[&str]) -> usize {
    (fnv64(parts) % BUCKETS as u64) as usize
}

/// Sparse features of a cleaned text: (bucket, value), unit L2 norm, sorted by bucket.
fn sparse_features(cleaned: &str) -> Vec<(usize, f32)> {
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    let mut counts: HashMap<usize, f32> = HashMap::new();
    let mut add = |b: usize, w: f32| *counts.entry(b).or_insert(0.0) += w;
    for (i, w) in words.iter().enumerate() {
        add(fnv(&["u", w]), 1.0);
        let prev = if i == 0 { "<s>" } else { words[i - 1] };
        add(fnv(&["b", prev, w]), 1.0);
        let chars: Vec<char> = format!("<{w}>").chars().collect();
        for n in 3..=5 {
            for g in chars.windows(n) {
                let g: String = g.iter().collect();
                add(fnv(&["c", &g]), 0.5);
            }
        }
    }
    if let Some(last) = words.last() {
        add(fnv(&["b", last, "</s>"]), 1.0);
    }
    let mut v: Vec<(usize, f32)> = counts.into_iter().collect();
    v.sort_by_key(|(b, _)| *b);
    let n = v.iter().map(|(_, x)| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|(_, x)| *x /= n);
    }
    v
}

/// Training data: sentences per intent and out-of-domain (`none`) sentences.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainingSet {
    /// (intent name, sentences), in class order.
    pub intents: Vec<(String, Vec<String>)>,
    /// Sentences that are none of the intents.
    pub none: Vec<String>,
}

impl TrainingSet {
    /// Parse a training file: `[intents]` name = ["...", ...] and `[none]` sentences = [...].
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let strings = |v: &toml::Value, what: &str| -> Result<Vec<String>, String> {
            v.as_array()
                .ok_or_else(|| format!("{what}: want an array of strings"))?
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("{what}: want strings"))
                })
                .collect()
        };
        let mut set = Self::default();
        for (k, v) in &table {
            match (k.as_str(), v) {
                ("intents", toml::Value::Table(t)) => {
                    for (name, list) in t {
                        set.intents
                            .push((name.clone(), strings(list, &format!("intents.{name}"))?));
                    }
                }
                ("none", toml::Value::Table(t)) => {
                    for (name, list) in t {
                        set.none.extend(strings(list, &format!("none.{name}"))?);
                    }
                }
                (other, _) => {
                    return Err(format!(
                        "unknown key `{other}` (want [intents] and [none] tables)"
                    ));
                }
            }
        }
        Ok(set)
    }

    /// Read and parse a training file.
    pub fn from_file(path: &Path) -> Result<Self, SpeechError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpeechError::Training {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_toml(&text).map_err(|reason| SpeechError::Training {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Add sentences to an intent (created at the end when new).
    pub fn add(&mut self, intent: &str, sentences: impl IntoIterator<Item = String>) {
        match self.intents.iter_mut().find(|(n, _)| n == intent) {
            Some((_, v)) => v.extend(sentences),
            None => self
                .intents
                .push((intent.to_owned(), sentences.into_iter().collect())),
        }
    }
}

/// One classification: probability per class, best first (the `none` class included, named
/// [`NONE`]).
pub type Scores = Vec<(String, f32)>;

/// A trained multinomial logistic regression (intents + `none`).
pub struct Classifier {
    /// Class names: the intents, then [`NONE`].
    classes: Vec<String>,
    embedder: Option<Arc<Embedder>>,
    /// (BUCKETS + dim) x classes, row-major.
    weights: Vec<f32>,
    bias: Vec<f32>,
    /// Fingerprint of the training data (for equality).
    fingerprint: u64,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("classes", &self.classes)
            .field("embeddings", &self.embedder.is_some())
            .finish_non_exhaustive()
    }
}

impl PartialEq for Classifier {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
            && self.classes == other.classes
            && self.embedder.is_some() == other.embedder.is_some()
    }
}

struct Sample {
    sparse: Vec<(usize, f32)>,
    dense: Vec<f32>,
    class: usize,
}

impl Classifier {
    /// Train on `set` (deterministic). `embedder` None: sparse n-gram features only.
    pub fn train(set: &TrainingSet, embedder: Option<Arc<Embedder>>) -> Self {
        let mut classes: Vec<String> = set.intents.iter().map(|(n, _)| n.clone()).collect();
        classes.push(NONE.to_owned());
        let dim = embedder.as_ref().map_or(0, |e| e.dim());
        let mut this = Self {
            classes,
            embedder,
            weights: vec![0.0; (BUCKETS + dim) * (set.intents.len() + 1)],
            bias: vec![0.0; set.intents.len() + 1],
            fingerprint: 0,
        };
        let mut samples: Vec<Sample> = Vec::new();
        let mut fp: u64 = 0xcbf2_9ce4_8422_2325;
        let labelled = set
            .intents
            .iter()
            .enumerate()
            .flat_map(|(c, (_, s))| s.iter().map(move |t| (c, t)))
            .chain(set.none.iter().map(|t| (set.intents.len(), t)));
        for (class, text) in labelled {
            fp = (fp ^ fnv64(&[text]) ^ class as u64).wrapping_mul(0x0000_0100_0000_01b3);
            let (sparse, dense) = this.features(text);
            samples.push(Sample {
                sparse,
                dense,
                class,
            });
        }
        this.fingerprint = fp;
        this.fit(&samples);
        this
    }

    fn features(&self, text: &str) -> (Vec<(usize, f32)>, Vec<f32>) {
        let cleaned = clean(text);
        let dense = match &self.embedder {
            Some(e) => {
                let mut v = e.embed(&cleaned);
                v.iter_mut().for_each(|x| *x *= EMBED_WEIGHT);
                v
            }
            None => Vec::new(),
        };
        (sparse_features(&cleaned), dense)
    }

    fn logits(&self, sparse: &[(usize, f32)], dense: &[f32]) -> Vec<f32> {
        let c = self.classes.len();
        let mut z = self.bias.clone();
        for &(j, x) in sparse {
            let row = &self.weights[j * c..(j + 1) * c];
            z.iter_mut().zip(row).for_each(|(a, w)| *a += x * w);
        }
        for (d, &x) in dense.iter().enumerate() {
            let j = BUCKETS + d;
            let row = &self.weights[j * c..(j + 1) * c];
            z.iter_mut().zip(row).for_each(|(a, w)| *a += x * w);
        }
        z
    }

    fn fit(&mut self, samples: &[Sample]) {
        let c = self.classes.len();
        let mut order: Vec<usize> = (0..samples.len()).collect();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut step = 0usize;
        let total = (EPOCHS * samples.len()).max(1) as f32;
        for _ in 0..EPOCHS {
            // Fisher-Yates with a fixed LCG: the same order on every run
            for i in (1..order.len()).rev() {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let j = ((seed >> 33) % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
            for &s in &order {
                let sample = &samples[s];
                let lr = LEARNING_RATE * (1.0 - step as f32 / total).max(0.05);
                step += 1;
                let p = softmax(&self.logits(&sample.sparse, &sample.dense));
                let grad: Vec<f32> = (0..c)
                    .map(|k| p[k] - if k == sample.class { 1.0 } else { 0.0 })
                    .collect();
                let update = |row: &mut [f32], x: f32| {
                    for (w, g) in row.iter_mut().zip(&grad) {
                        *w -= lr * (g * x + L2 * *w);
                    }
                };
                for &(j, x) in &sample.sparse {
                    update(&mut self.weights[j * c..(j + 1) * c], x);
                }
                for (d, &x) in sample.dense.iter().enumerate() {
                    let j = BUCKETS + d;
                    update(&mut self.weights[j * c..(j + 1) * c], x);
                }
                for (b, g) in self.bias.iter_mut().zip(&grad) {
                    *b -= lr * g;
                }
            }
        }
    }

    /// Class names (the intents, then [`NONE`]).
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Whether sentence embeddings are in use.
    pub fn uses_embeddings(&self) -> bool {
        self.embedder.is_some()
    }

    /// Probability of every class for `text`, best first.
    pub fn classify(&self, text: &str) -> Scores {
        let (sparse, dense) = self.features(text);
        let p = softmax(&self.logits(&sparse, &dense));
        let mut out: Scores = self.classes.iter().cloned().zip(p).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        out
    }
}

fn softmax(z: &[f32]) -> Vec<f32> {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = z.iter().map(|x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

type QuickKey = (
    PathBuf,
    Option<(u64, Option<std::time::SystemTime>)>,
    Vec<(String, Vec<String>)>,
    PathBuf,
);
type Cache<K> = Mutex<Vec<(K, Arc<Classifier>)>>;
static EMBEDDERS: Mutex<Vec<(PathBuf, Arc<Embedder>)>> = Mutex::new(Vec::new());
/// Trained classifiers by training content and models folder.
static CLASSIFIERS: Cache<(TrainingSet, PathBuf)> = Mutex::new(Vec::new());
/// Trained classifiers by training file (path, size, mtime), step intents and models folder.
static SEEN: Cache<QuickKey> = Mutex::new(Vec::new());

/// The embedder of a models folder, loaded once per process.
pub fn shared_embedder(models: &Path) -> Result<Arc<Embedder>, SpeechError> {
    let mut cache = EMBEDDERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, e)) = cache.iter().find(|(p, _)| p == models) {
        return Ok(Arc::clone(e));
    }
    let e = Arc::new(Embedder::load(models)?);
    cache.push((models.to_path_buf(), Arc::clone(&e)));
    Ok(e)
}

/// The classifier for a step: the training file plus the step's own phrases per intent
/// (`intents`: name and phrases, in the step's order; training intents the step does not
/// have are left out), with the embeddings of `models`. Trained once per process and
/// distinct training data; a missing embedding file is an error naming `scripts/models/fetch`.
pub fn shared_classifier(
    training: &Path,
    intents: &[(String, Vec<String>)],
    models: &Path,
) -> Result<Arc<Classifier>, SpeechError> {
    // Fast path for every speech turn of a call: the same file (path, size, modification
    // time), intents and models folder as before -> the trained classifier, without parsing.
    let meta = std::fs::metadata(training)
        .ok()
        .map(|m| (m.len(), m.modified().ok()));
    let quick: QuickKey = (
        training.to_path_buf(),
        meta,
        intents.to_vec(),
        models.to_path_buf(),
    );
    {
        let seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = seen.iter().find(|(k, _)| *k == quick) {
            return Ok(Arc::clone(c));
        }
    }
    let file = TrainingSet::from_file(training)?;
    let mut set = TrainingSet {
        intents: Vec::new(),
        none: file.none,
    };
    for (name, phrases) in intents {
        set.add(name, phrases.iter().cloned());
        if let Some((_, more)) = file.intents.iter().find(|(n, _)| n == name) {
            set.add(name, more.iter().cloned());
        }
    }
    // the training content (and models folder) as the key: equal data, one classifier
    let key = (set.clone(), models.to_path_buf());
    let embedder = shared_embedder(models).map_err(|e| match e {
        SpeechError::ModelMissing { path, source } => SpeechError::Training {
            path: training.to_path_buf(),
            reason: format!(
                "the intent classifier needs the word embeddings {} ({source}); fix: {FETCH_HINT}",
                path.display()
            ),
        },
        other => other,
    })?;
    let c = {
        let mut cache = CLASSIFIERS.lock().unwrap_or_else(|e| e.into_inner());
        match cache.iter().find(|(k, _)| *k == key) {
            Some((_, c)) => Arc::clone(c),
            None => {
                let c = Arc::new(Classifier::train(&set, Some(embedder)));
                cache.push((key, Arc::clone(&c)));
                c
            }
        }
    };
    SEEN.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((quick, Arc::clone(&c)));
    Ok(c)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn set() -> TrainingSet {
        TrainingSet::from_toml(
            r#"
            [intents]
            lost_card = ["I lost my card", "my card was stolen", "someone took my wallet",
                         "block my card", "I can't find my card", "my purse was stolen"]
            balance = ["check my balance", "how much money do I have", "what's in my account",
                       "account balance please", "how much is left", "my current balance"]
            [none]
            sentences = ["my card was declined", "the weather is nice", "I want a new card design",
                         "book a taxi", "my card does not work at the shop", "what is your address"]
            "#,
        )
        .unwrap_or_default()
    }

    fn best(c: &Classifier, t: &str) -> String {
        c.classify(t)[0].0.clone()
    }

    #[test]
    fn clean_spells_out_contractions_and_drops_fillers() {
        assert_eq!(clean("Um, I can't find my card."), "i can not find my card");
        assert_eq!(
            clean("I'd like, uh, like my balance"),
            "i would like my balance"
        );
        assert_eq!(clean("It's gone, I'm sure"), "it gone i am sure");
        assert_eq!(clean("She won't"), "she will not");
    }

    #[test]
    fn training_is_deterministic_and_learns_sparse_features() {
        let s = set();
        assert_eq!(s.intents.len(), 2);
        assert_eq!(s.none.len(), 6);
        let a = Classifier::train(&s, None);
        let b = Classifier::train(&s, None);
        assert_eq!(a.weights, b.weights, "same data, same weights");
        assert_eq!(a, b);
        assert_eq!(
            a.classes(),
            ["balance", "lost_card", "none"],
            "file order is sorted by toml"
        );
        assert_eq!(best(&a, "I lost my card"), "lost_card");
        assert_eq!(best(&a, "what's my balance"), "balance");
        let p = a.classify("how much money is in my account");
        assert_eq!(p[0].0, "balance");
        let sum: f32 = p.iter().map(|(_, x)| x).sum();
        assert!((sum - 1.0).abs() < 1e-4, "{p:?}");
    }

    #[test]
    fn the_none_class_takes_out_of_domain_sentences() {
        let c = Classifier::train(&set(), None);
        assert_eq!(best(&c, "my card was declined at the shop"), "none");
        assert_eq!(best(&c, "book me a taxi please"), "none");
    }

    #[test]
    fn a_bad_training_file_is_an_error() {
        assert!(TrainingSet::from_toml("intents = 3").is_err());
        assert!(TrainingSet::from_toml("[intents]\nx = [1]").is_err());
        assert!(TrainingSet::from_toml("[other]\nx = []").is_err());
        let e = TrainingSet::from_file(Path::new("/nonexistent/intents.toml"));
        assert!(matches!(e, Err(SpeechError::Training { .. })));
    }

    #[test]
    fn a_missing_embedding_file_names_the_fetch_script() {
        let dir = std::env::temp_dir().join(format!("nlu-missing-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let training = dir.join("t.toml");
        std::fs::write(&training, "[intents]\na = [\"x\"]\n[none]\ns = [\"y\"]\n").unwrap();
        let err = shared_classifier(&training, &[("a".to_owned(), vec![])], &dir)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("scripts/models/fetch"), "{err}");
        assert!(
            err.contains(EMBED_TOKENIZER) || err.contains(EMBED_WEIGHTS),
            "{err}"
        );
        let err = Embedder::load(&dir).unwrap_err();
        assert!(matches!(err, SpeechError::ModelMissing { .. }), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_embedding_file_is_reported() {
        let p = Path::new("x.safetensors");
        assert!(read_safetensors_f16(p, b"abc").is_err());
        assert!(read_safetensors_f16(p, &[255, 255, 255, 255, 0, 0, 0, 0, 1]).is_err());
        let header = br#"{"w":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]}}"#;
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header);
        for x in [1.0f32, 2.0, -0.5, 0.25] {
            file.extend_from_slice(&half::f16::from_f32(x).to_bits().to_le_bytes());
        }
        let (cols, v) = read_safetensors_f16(p, &file).unwrap();
        assert_eq!((cols, v), (2, vec![1.0, 2.0, -0.5, 0.25]));
        file.truncate(file.len() - 1);
        assert!(read_safetensors_f16(p, &file).is_err());
    }

    /// With the fetched embeddings (scripts/models/fetch): the tokenizer matches HuggingFace
    /// tokenizers' ids, and embeddings carry meaning the n-grams cannot.
    #[test]
    fn embeddings_from_the_models_folder() {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        let e = match Embedder::load(&models) {
            Ok(e) => e,
            Err(err) => panic!("{err}"),
        };
        assert_eq!(e.dim(), 256);
        // reference ids: python tokenizers, Tokenizer.from_file(...).encode(s, add_special_tokens=False)
        assert_eq!(
            e.tokenize("somebody took my wallet"),
            [18462, 3614, 590, 17042, 1026]
        );
        assert_eq!(
            e.tokenize("my card was declined"),
            [590, 5881, 471, 4845, 1312]
        );
        assert_eq!(
            e.tokenize("naïve café 😀"),
            [1055, 30085, 345, 274, 28059, 29871, 243, 162, 155, 131]
        );
        let v = e.embed("i lost my wallet");
        assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4);
        let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let purse = e.embed("i lost my purse");
        let weather = e.embed("nice weather today");
        assert!(cos(&v, &purse) > cos(&v, &weather));
        // trained with embeddings: deterministic, and the none class still works
        let shared = Arc::new(e);
        let a = Classifier::train(&set(), Some(Arc::clone(&shared)));
        let b = Classifier::train(&set(), Some(shared));
        assert_eq!(a.weights, b.weights);
        assert!(a.uses_embeddings());
        assert_eq!(best(&a, "somebody nicked my purse"), "lost_card");
        assert_eq!(best(&a, "my card got declined"), "none");
    }

    /// The hotline's training file through [`shared_classifier`]: trained once, shared by
    /// later calls (speech turns), and fast enough for a dialplan load.
    #[test]
    fn the_hotline_classifier_is_trained_once_and_shared() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let training = root.join("dialplans/intents/hotline-en.toml");
        let intents = vec![
            ("balance".to_owned(), vec!["check my balance".to_owned()]),
            ("lost_card".to_owned(), vec!["I lost my card".to_owned()]),
        ];
        let a = shared_classifier(&training, &intents, &root.join("models")).unwrap();
        let b = shared_classifier(&training, &intents, &root.join("models")).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "trained once");
        assert_eq!(a.classes(), ["balance", "lost_card", "none"]);
        assert_eq!(best(&a, "somebody took my wallet on the bus"), "lost_card");
        assert_eq!(best(&a, "my card was declined in the shop"), "none");
        let other = vec![("balance".to_owned(), vec!["check my balance".to_owned()])];
        let c = shared_classifier(&training, &other, &root.join("models")).unwrap();
        assert!(!Arc::ptr_eq(&a, &c), "other intents, another classifier");
    }
}
