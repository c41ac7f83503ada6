//! How events spread over time: fixed-width histograms of timestamps and
//! nearest-rank percentiles — to show that reconnecting agents arrive spread
//! out rather than in one burst.

/// Counts `offsets_ms` (times relative to a start) into buckets of
/// `width_ms`: bucket `i` holds `[i·width, (i+1)·width)`. Offsets before the
/// start fall into bucket 0. The histogram ends at the last non-empty bucket.
pub fn histogram(offsets_ms: &[i64], width_ms: u64) -> Vec<u32> {
    let width = width_ms.max(1) as i64;
    let mut buckets: Vec<u32> = Vec::new();
    for &t in offsets_ms {
        let i = (t.max(0) / width) as usize;
        if buckets.len() <= i {
            buckets.resize(i + 1, 0);
        }
        buckets[i] += 1;
    }
    buckets
}

/// Sums every `factor` adjacent buckets into one (a coarser view).
pub fn coarsen(buckets: &[u32], factor: usize) -> Vec<u32> {
    buckets
        .chunks(factor.max(1))
        .map(|c| c.iter().sum())
        .collect()
}

/// The nearest-rank `p`-th percentile (0–100) of `values`; `None` if empty.
pub fn percentile(values: &[u64], p: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// One text line per bucket with a bar scaled to `width` characters at the
/// largest bucket, e.g. `  0.5- 1.0 s   123 ######`.
pub fn bars(buckets: &[u32], bucket_ms: u64, width: usize) -> Vec<String> {
    let max = buckets.iter().copied().max().unwrap_or(0).max(1) as usize;
    buckets
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let from = i as f64 * bucket_ms as f64 / 1000.0;
            let to = (i + 1) as f64 * bucket_ms as f64 / 1000.0;
            let bar = "#".repeat((n as usize * width).div_ceil(max));
            format!("{from:5.1}-{to:4.1} s {n:6} {bar}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_by_width_and_clamps_early_ones() {
        let h = histogram(&[-5, 0, 99, 100, 250, 250, 999], 100);
        assert_eq!(h, vec![3, 1, 2, 0, 0, 0, 0, 0, 0, 1]);
        assert!(histogram(&[], 100).is_empty());
        assert_eq!(histogram(&[7], 0), vec![0, 0, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn coarsens_keeping_the_total() {
        let h = vec![1, 2, 3, 4, 5, 6, 7];
        assert_eq!(coarsen(&h, 5), vec![15, 13]);
        assert_eq!(coarsen(&h, 1), h);
        assert_eq!(coarsen(&h, 0), h);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=10).rev().collect();
        assert_eq!(percentile(&v, 50.0), Some(5));
        assert_eq!(percentile(&v, 90.0), Some(9));
        assert_eq!(percentile(&v, 100.0), Some(10));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[42], 99.0), Some(42));
    }

    #[test]
    fn bars_scale_to_the_largest_bucket() {
        let lines = bars(&[2, 0, 4], 500, 8);
        assert_eq!(lines.len(), 3);
        assert!(lines[0].ends_with(" 2 ####"), "{}", lines[0]);
        assert!(lines[1].ends_with(" 0 "), "{}", lines[1]);
        assert!(lines[2].contains("1.0- 1.5 s"), "{}", lines[2]);
        assert!(lines[2].ends_with("########"), "{}", lines[2]);
    }
}
