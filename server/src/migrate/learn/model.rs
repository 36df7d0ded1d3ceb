//! The model: a logistic regression (`smartcore`) over a key's features
//! ([`super::features`]) that gives the probability that the key is touched within the
//! label window. Its inputs are standardized; the pattern class enters as the share of
//! that class's training keys that were touched (smoothed towards the overall share, so
//! a class seen a few times says little).
//!
//! Trained on the older three quarters of the samples and judged on the newest quarter:
//! the area under the ROC curve (AUC) of the model and of the LFU counter alone (the
//! heuristic it must beat) on the same keys. The planner uses a model only if it ranks
//! better than the counter there ([`Model::beats_heuristic`]).
//!
//! Why logistic regression: smartcore's trees and forests answer a class, not a
//! probability (a tree's `predict_proba` is one-hot at the leaf), and the planner must
//! rank keys; the features carry the non-linear parts (logs, the overdue-ratio and idle
//! bins). `kelvin-bench planner-eval` measures it against the heuristics.

use std::collections::HashMap;

use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::logistic_regression::{LogisticRegression, LogisticRegressionParameters};

use super::features::{Raw, BYTES_LN, COUNTER, IDLE_LN, RAW};

/// Inputs of the regression: the raw features and the class's touched share.
pub const INPUTS: usize = RAW + 1;
/// Fewest labelled samples a model is trained on, and fewest of each label.
pub const MIN_SAMPLES: usize = 200;
pub const MIN_EACH_LABEL: usize = 20;
/// Weight of the overall share in a class's smoothed share (as if this many samples).
const CLASS_PRIOR_WEIGHT: f64 = 20.0;
/// Most pattern classes a model keeps a share for; the rest get the overall share.
pub const MAX_CLASSES: usize = 256;
/// A model ranks a plan only if it was judged on at least this many held-out samples
/// and, planning them as a migration would ([`JUDGE_BUDGET_PERCENT`] of their bytes,
/// per byte), its plan held this share more of the touched ones than the heat
/// planner's (a few hundred samples put equal planners a few percent apart by chance).
pub const MIN_HELD_OUT: usize = 200;
pub const HIT_MARGIN: f64 = 0.05;
/// The eager budget of the held-out judgment, percent of the held-out keys' bytes.
pub const JUDGE_BUDGET_PERCENT: f64 = 10.0;
/// L2 regularization of the regression.
const ALPHA: f64 = 0.1;

/// One labelled example: a key's features when it was observed, its pattern class, and
/// whether it was touched within the label window after.
#[derive(Debug, Clone)]
pub struct Sample {
    pub raw: Raw,
    pub class: Vec<u8>,
    pub touched: bool,
}

/// A trained model. See the module documentation.
#[derive(Debug, Clone)]
pub struct Model {
    pub(super) weights: [f64; INPUTS],
    pub(super) intercept: f64,
    pub(super) mean: [f64; INPUTS],
    pub(super) scale: [f64; INPUTS],
    pub(super) class_share: HashMap<Vec<u8>, f64>,
    pub(super) overall_share: f64,
    /// Samples it was trained on (all of them, in the end), and how many were touched.
    pub trained_on: usize,
    pub positives: usize,
    /// Area under the ROC curve on the held-out newest quarter, of the model fitted
    /// without it, and of the LFU counter on the same samples.
    pub auc: f64,
    pub heuristic_auc: f64,
    pub held_out: usize,
    /// Touched held-out keys within a [`JUDGE_BUDGET_PERCENT`] plan: the model's
    /// (fitted without them) and the heat planner's (counter per byte).
    pub hits: usize,
    pub heuristic_hits: usize,
}

impl Model {
    /// Trains on `samples` (oldest first): first on the older three quarters, judged on
    /// the newest quarter (the AUCs), then again on all of them, the model kept. An error
    /// says why no model came out (too few samples, one label only, the solver failed).
    pub fn train(samples: &[Sample]) -> Result<Model, String> {
        if samples.len() < MIN_SAMPLES {
            return Err(format!(
                "{} labelled samples, at least {MIN_SAMPLES} needed",
                samples.len()
            ));
        }
        let split = samples.len() * 3 / 4;
        let (train, test) = samples.split_at(split);
        let judged = Model::fit(train)?;
        let labels: Vec<bool> = test.iter().map(|s| s.touched).collect();
        let scores: Vec<f64> = test
            .iter()
            .map(|s| judged.score(&s.raw, &s.class))
            .collect();
        // The LFU counter, ties broken by recency (what the heat planner ranks by).
        let heuristic: Vec<f64> = test
            .iter()
            .map(|s| s.raw[COUNTER] as f64 - s.raw[IDLE_LN] as f64 * 1e-3)
            .collect();
        // The plans: the model's per byte, and the heat planner's (counter per byte; a key
        // decayed to zero is not a candidate).
        let bytes: Vec<f64> = test
            .iter()
            .map(|s| (s.raw[BYTES_LN] as f64).exp_m1().max(1.0))
            .collect();
        let per_byte: Vec<f64> = scores.iter().zip(&bytes).map(|(p, b)| p / b).collect();
        let counter_per_byte: Vec<f64> = test
            .iter()
            .zip(&bytes)
            .map(|(s, b)| {
                if s.raw[COUNTER] > 0.0 {
                    s.raw[COUNTER] as f64 / b
                } else {
                    -1.0
                }
            })
            .collect();
        let budget = bytes.iter().sum::<f64>() * JUDGE_BUDGET_PERCENT / 100.0;
        let mut model = Model::fit(samples).unwrap_or(judged);
        model.auc = auc(&scores, &labels);
        model.heuristic_auc = auc(&heuristic, &labels);
        model.held_out = test.len();
        model.hits = hits(&per_byte, &bytes, &labels, budget);
        model.heuristic_hits = hits(&counter_per_byte, &bytes, &labels, budget);
        Ok(model)
    }

    /// A model fitted on `train` (not judged yet).
    fn fit(train: &[Sample]) -> Result<Model, String> {
        let positives = train.iter().filter(|s| s.touched).count();
        if positives < MIN_EACH_LABEL || train.len() - positives < MIN_EACH_LABEL {
            return Err(format!(
                "{positives} of {} samples touched: too few of one label",
                train.len()
            ));
        }
        let overall_share = positives as f64 / train.len() as f64;
        let mut counts: HashMap<&[u8], (u64, u64)> = HashMap::new();
        for s in train {
            if counts.len() < MAX_CLASSES || counts.contains_key(s.class.as_slice()) {
                let c = counts.entry(&s.class).or_default();
                c.0 += 1;
                c.1 += u64::from(s.touched);
            }
        }
        let class_share = counts
            .into_iter()
            .map(|(class, (n, touched))| {
                let share = (touched as f64 + CLASS_PRIOR_WEIGHT * overall_share)
                    / (n as f64 + CLASS_PRIOR_WEIGHT);
                (class.to_vec(), share)
            })
            .collect();
        let mut model = Model {
            weights: [0.0; INPUTS],
            intercept: 0.0,
            mean: [0.0; INPUTS],
            scale: [1.0; INPUTS],
            class_share,
            overall_share,
            trained_on: train.len(),
            positives,
            auc: 0.5,
            heuristic_auc: 0.5,
            held_out: 0,
            hits: 0,
            heuristic_hits: 0,
        };
        let inputs: Vec<[f64; INPUTS]> = train.iter().map(|s| model.inputs(s)).collect();
        for j in 0..INPUTS {
            let n = inputs.len() as f64;
            let mean = inputs.iter().map(|x| x[j]).sum::<f64>() / n;
            let var = inputs.iter().map(|x| (x[j] - mean).powi(2)).sum::<f64>() / n;
            model.mean[j] = mean;
            // A constant input stays at 0 after standardizing.
            model.scale[j] = if var > 1e-12 { var.sqrt() } else { 1.0 };
        }
        let rows: Vec<Vec<f64>> = inputs
            .iter()
            .map(|x| model.standardize(x).to_vec())
            .collect();
        let labels: Vec<u32> = train.iter().map(|s| u32::from(s.touched)).collect();
        // The solver is third-party code on data from traffic: a panic in it must not
        // take the trainer's thread down with it.
        let fitted = std::panic::catch_unwind(|| {
            let x = DenseMatrix::from_2d_vec(&rows).map_err(|e| e.to_string())?;
            let params = LogisticRegressionParameters::default().with_alpha(ALPHA);
            let lr: LogisticRegression<f64, u32, DenseMatrix<f64>, Vec<u32>> =
                LogisticRegression::fit(&x, &labels, params).map_err(|e| e.to_string())?;
            use smartcore::linalg::basic::arrays::Array;
            let w: Vec<f64> = (0..INPUTS)
                .map(|j| *lr.coefficients().get((0, j)))
                .collect();
            Ok::<_, String>((w, *lr.intercept().get((0, 0))))
        })
        .map_err(|_| "the solver panicked".to_string())??;
        if fitted.0.iter().chain([&fitted.1]).any(|v| !v.is_finite()) {
            return Err("the solver gave a weight that is not a number".into());
        }
        model.weights.copy_from_slice(&fitted.0);
        model.intercept = fitted.1;
        Ok(model)
    }

    /// The probability that a key with features `raw` of class `class` is touched
    /// within the label window.
    pub fn score(&self, raw: &Raw, class: &[u8]) -> f64 {
        let x = self.standardize(&self.inputs_of(raw, class));
        let z = self.intercept + x.iter().zip(&self.weights).map(|(a, w)| a * w).sum::<f64>();
        1.0 / (1.0 + (-z).exp())
    }

    /// Whether the model planned the held-out keys clearly better than the heat planner
    /// did ([`MIN_HELD_OUT`], [`HIT_MARGIN`]).
    pub fn beats_heuristic(&self) -> bool {
        self.held_out >= MIN_HELD_OUT
            && self.hits as f64 > self.heuristic_hits as f64 * (1.0 + HIT_MARGIN)
    }

    fn inputs(&self, s: &Sample) -> [f64; INPUTS] {
        self.inputs_of(&s.raw, &s.class)
    }

    fn inputs_of(&self, raw: &Raw, class: &[u8]) -> [f64; INPUTS] {
        let mut x = [0.0; INPUTS];
        for (x, r) in x.iter_mut().zip(raw) {
            *x = *r as f64;
        }
        x[RAW] = *self.class_share.get(class).unwrap_or(&self.overall_share);
        x
    }

    fn standardize(&self, x: &[f64; INPUTS]) -> [f64; INPUTS] {
        let mut out = [0.0; INPUTS];
        for j in 0..INPUTS {
            out[j] = (x[j] - self.mean[j]) / self.scale[j];
        }
        out
    }
}

/// How many of the `touched` keys a plan holds that takes keys by `score` (highest
/// first; a negative score is no candidate) while their `bytes` fit `budget`.
fn hits(score: &[f64], bytes: &[f64], touched: &[bool], budget: f64) -> usize {
    let mut order: Vec<usize> = (0..score.len()).filter(|&i| score[i] >= 0.0).collect();
    order.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
    let (mut spent, mut held) = (0.0, 0);
    for i in order {
        if spent + bytes[i] <= budget {
            spent += bytes[i];
            held += usize::from(touched[i]);
        }
    }
    held
}

/// The area under the ROC curve of `scores` for `labels`: the chance that a random
/// touched key scores above a random untouched one (ties count a half). 0.5 when one
/// label is missing.
pub fn auc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum, mut positives) = (0.0, 0usize);
    let mut i = 0;
    while i < order.len() {
        // Tied scores share their mean rank.
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if labels[k] {
                rank_sum += mean_rank;
                positives += 1;
            }
        }
        i = j + 1;
    }
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return 0.5;
    }
    let p = positives as f64;
    (rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_perfect_random_and_inverted_rankings() {
        let labels = [false, false, true, true];
        assert_eq!(auc(&[0.1, 0.2, 0.8, 0.9], &labels), 1.0);
        assert_eq!(auc(&[0.9, 0.8, 0.2, 0.1], &labels), 0.0);
        assert_eq!(auc(&[0.5; 4], &labels), 0.5);
        assert_eq!(auc(&[0.1, 0.2], &[true, true]), 0.5);
    }

    /// Keys touched when input 3 (overdue ratio) is low, lower still unless the class is hot:
    /// the model must find both, and rank the held-out keys better than the counter.
    #[test]
    fn it_learns_a_rule_the_counter_does_not_see() {
        let mut samples = Vec::new();
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as f32 / (1u64 << 31) as f32
        };
        for _ in 0..2000 {
            let mut raw = [0.0f32; RAW];
            for r in raw.iter_mut() {
                *r = next();
            }
            let hot = next() < 0.5;
            let touched = raw[3] < 0.3 || (hot && raw[3] < 0.6);
            samples.push(Sample {
                raw,
                class: if hot {
                    b"hot".to_vec()
                } else {
                    b"cold".to_vec()
                },
                touched,
            });
        }
        let m = Model::train(&samples).unwrap();
        assert!(m.auc > 0.75, "auc {}", m.auc);
        assert!(
            m.hits > m.heuristic_hits,
            "{} vs {}",
            m.hits,
            m.heuristic_hits
        );
        assert!((m.heuristic_auc - 0.5).abs() < 0.1, "{}", m.heuristic_auc);
        assert!(m.beats_heuristic());
        let mut raw = [0.5f32; RAW];
        raw[3] = 0.1;
        assert!(m.score(&raw, b"hot") > m.score(&raw, b"cold"));
        assert!(m.score(&raw, b"never-seen").is_finite());
    }

    #[test]
    fn too_few_samples_or_one_label_is_an_error() {
        let s = Sample {
            raw: [0.0; RAW],
            class: vec![],
            touched: true,
        };
        assert!(Model::train(&vec![s.clone(); 10])
            .unwrap_err()
            .contains("at least"));
        assert!(Model::train(&vec![s; 1000])
            .unwrap_err()
            .contains("one label"));
    }
}
