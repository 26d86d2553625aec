//! Queueing-theory predictions: Erlang C (M/M/N, infinite patience) and Erlang A (M/M/N+M,
//! exponential patience).
//!
//! Service level is "answered within `t` seconds / offered" (abandoned calls count as not
//! answered in time), average speed of answer (ASA) is the mean wait of answered calls.

use serde::Serialize;

/// Which model produced a [`Prediction`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// M/M/N, infinite patience.
    ErlangC,
    /// M/M/N+M, exponential patience.
    ErlangA,
}

/// Steady-state prediction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prediction {
    /// The model.
    pub model: Model,
    /// Probability that a caller has to wait.
    pub p_wait: f64,
    /// Fraction of offered calls answered within the threshold.
    pub service_level: f64,
    /// Mean wait of answered calls, seconds.
    pub asa_s: f64,
    /// Fraction of offered calls that abandon.
    pub abandon_rate: f64,
    /// Agent occupancy (fraction of agent time busy).
    pub occupancy: f64,
}

/// Erlang B blocking probability for `n` servers and offered load `a` erlangs.
pub fn erlang_b(n: u32, a: f64) -> f64 {
    let mut b = 1.0;
    for k in 1..=n {
        b = a * b / (f64::from(k) + a * b);
    }
    b
}

/// Erlang C for `agents` agents, arrival rate `lambda` per second, mean handle time `aht_s`
/// and service-level threshold `t_s`. `None` if the load is not below the agent count.
///
/// `C = N·B / (N − A(1 − B))`, `SL(t) = 1 − C·e^{−(N−A)t/AHT}`, `ASA = C·AHT/(N−A)`, with
/// `A = λ·AHT` and `B` the Erlang B probability.
pub fn erlang_c(agents: u32, lambda: f64, aht_s: f64, t_s: f64) -> Option<Prediction> {
    let n = f64::from(agents);
    let a = lambda * aht_s;
    if !(a > 0.0 && a < n && aht_s > 0.0) {
        return None;
    }
    let b = erlang_b(agents, a);
    let c = n * b / (n - a * (1.0 - b));
    Some(Prediction {
        model: Model::ErlangC,
        p_wait: c,
        service_level: 1.0 - c * (-(n - a) * t_s / aht_s).exp(),
        asa_s: c * aht_s / (n - a),
        abandon_rate: 0.0,
        occupancy: a / n,
    })
}

/// Erlang A (Palm's M/M/N+M) with mean patience `patience_s`, computed exactly from the
/// birth–death chain (truncated where the tail is negligible) and, for the service level, by
/// uniformization of the tagged caller's position in the queue.
pub fn erlang_a(
    agents: u32,
    lambda: f64,
    aht_s: f64,
    patience_s: f64,
    t_s: f64,
) -> Option<Prediction> {
    if !(lambda > 0.0 && aht_s > 0.0 && patience_s > 0.0 && agents > 0) {
        return None;
    }
    let n = agents as usize;
    let mu = 1.0 / aht_s;
    let theta = 1.0 / patience_s;
    let nmu = f64::from(agents) * mu;
    // Stationary distribution (unnormalized, rescaled against overflow).
    let mut pi = vec![1.0f64];
    let mut k = 0usize;
    loop {
        k += 1;
        let death = if k <= n {
            k as f64 * mu
        } else {
            nmu + (k - n) as f64 * theta
        };
        let next = pi[k - 1] * lambda / death;
        pi.push(next);
        if next > 1e200 {
            for p in &mut pi {
                *p *= 1e-200;
            }
        }
        let total: f64 = pi.iter().sum();
        if k > n && lambda < death && next < total * 1e-15 {
            break;
        }
        if k > n + 200_000 {
            break;
        }
    }
    let total: f64 = pi.iter().sum();
    for p in &mut pi {
        *p /= total;
    }
    let p_immediate: f64 = pi.iter().take(n).sum();
    let queue: Vec<f64> = pi.iter().skip(n).copied().collect(); // j = 0.. ahead in queue
    let p_wait = 1.0 - p_immediate;
    // Tagged caller finding j ahead: served with prob s_j, E[W·1{served}] = m_j.
    let mut served = p_immediate;
    let mut w_served = 0.0;
    let (mut s_prev, mut m_prev) = (1.0, 0.0);
    for (j, q) in queue.iter().enumerate() {
        let prog = nmu + j as f64 * theta;
        let r = prog + theta;
        let s = prog / r * s_prev;
        let m = s / r + prog / r * m_prev;
        served += q * s;
        w_served += q * m;
        s_prev = s;
        m_prev = m;
    }
    // Service level by uniformization over positions.
    let jmax = queue.len();
    let big = nmu + jmax as f64 * theta + theta;
    let mut v = queue.clone();
    let mut absorbed = 0.0;
    let lt = big * t_s;
    let steps = (lt + 10.0 * lt.sqrt() + 20.0) as usize;
    let ln_lt = lt.max(f64::MIN_POSITIVE).ln();
    let mut log_pois = -lt; // ln P(K = step)
    let mut within = 0.0;
    let mut next = vec![0.0; jmax];
    for step in 0..=steps {
        within += log_pois.exp() * absorbed;
        // advance one uniformized step
        next.iter_mut().for_each(|x| *x = 0.0);
        for (j, &x) in v.iter().enumerate() {
            if x == 0.0 {
                continue;
            }
            let prog = nmu + j as f64 * theta;
            let stay = 1.0 - (prog + theta) / big;
            next[j] += x * stay;
            if j == 0 {
                absorbed += x * prog / big;
            } else {
                next[j - 1] += x * prog / big;
            }
        }
        std::mem::swap(&mut v, &mut next);
        let k1 = (step + 1) as f64;
        log_pois += ln_lt - k1.ln();
    }
    let asa = if served > 0.0 { w_served / served } else { 0.0 };
    Some(Prediction {
        model: Model::ErlangA,
        p_wait,
        service_level: p_immediate + within,
        asa_s: asa,
        abandon_rate: 1.0 - served,
        occupancy: lambda * served * aht_s / f64::from(agents),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erlang_c_textbook() {
        // 10 agents, 2 calls/min... classic: A = 8 erlangs, N = 10: C ≈ 0.409.
        let p = erlang_c(10, 8.0 / 180.0, 180.0, 20.0).unwrap_or_else(|| panic!("stable"));
        assert!((p.p_wait - 0.4092).abs() < 1e-3, "{p:?}");
        assert!((p.asa_s - 0.4092 * 180.0 / 2.0).abs() < 0.2);
    }

    #[test]
    fn erlang_a_tends_to_erlang_c() {
        let c = erlang_c(20, 17.0 / 180.0, 180.0, 20.0).unwrap_or_else(|| panic!("stable"));
        let a = erlang_a(20, 17.0 / 180.0, 180.0, 1e9, 20.0).unwrap_or_else(|| panic!("ok"));
        assert!((a.p_wait - c.p_wait).abs() < 1e-3, "{a:?} {c:?}");
        assert!(
            (a.service_level - c.service_level).abs() < 1e-3,
            "{a:?} {c:?}"
        );
        assert!((a.asa_s - c.asa_s).abs() / c.asa_s < 1e-2, "{a:?} {c:?}");
    }

    #[test]
    fn erlang_a_overload_is_finite() {
        let a = erlang_a(10, 20.0 / 180.0, 180.0, 60.0, 20.0).unwrap_or_else(|| panic!("ok"));
        assert!(a.abandon_rate > 0.3 && a.abandon_rate < 0.7, "{a:?}");
        assert!(a.service_level > 0.0 && a.service_level < 1.0);
    }
}
