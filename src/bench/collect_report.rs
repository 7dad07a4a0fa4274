//! The table `sdscope bench collect` prints: per batch size and side, throughput, load time, peak memory and bytes
//! written; then the best batch size of each side against the other's, and the verdict on each goal.

use super::collect::{BatchRun, CollectBenchOptions, CollectSideReport, GOAL_SPEED, POSITIONS};
use super::report::gib;
use std::fmt::Write;
use std::path::Path;

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn mb(bytes: f64) -> String {
    format!("{:.2} MB", bytes / 1e6)
}

fn row(s: &mut String, batch: usize, r: &CollectSideReport, agreement: &str) {
    let load = match (r.import_s, r.setup_s) {
        (Some(import), _) => format!("{:.1}+{:.1} s", import, r.load_s),
        (None, Some(setup)) => format!("{:.1}+{:.1} s", r.load_s, setup),
        (None, None) => format!("{:.1} s", r.load_s),
    };
    let _ = writeln!(
        s,
        "{:>5}  {:<9}  {:>10}  {:>8.1} s  {:>7.3}  {:>9.3}  {:>9}  {:>9}  {:>9}/s  {}",
        batch,
        r.side,
        load,
        r.collect_s,
        r.items_per_s,
        r.items_per_s_with_load,
        gib(r.peak_rss_bytes),
        mb(r.bytes_per_item),
        mb(r.bytes_per_s()),
        agreement
    );
}

/// The best run of a side: the highest items/s (loading excluded).
fn best<'a>(runs: impl Iterator<Item = &'a CollectSideReport>) -> Option<&'a CollectSideReport> {
    runs.max_by(|a, b| a.items_per_s.total_cmp(&b.items_per_s))
}

pub(super) fn render(opts: &CollectBenchOptions, model: &Path, threads: i64, runs: &[BatchRun]) -> String {
    let mut s = String::new();
    let py_threads = runs.iter().find_map(|r| r.diffusers.as_ref().map(|d| d.threads));
    let _ = writeln!(
        s,
        "\nsdscope bench collect: {}, SDXL architecture (random weights, float32), {}×{}, CPU",
        model.display(),
        opts.size,
        opts.size
    );
    let _ = writeln!(
        s,
        "{} items per run: 1 step, guidance 0, seeds 0..{}; updates of {} positions (conditional half, float32) \
         written to disk",
        opts.items,
        opts.items,
        POSITIONS.len()
    );
    let _ = writeln!(s, "positions: {}", POSITIONS.join(", "));
    let _ = writeln!(
        s,
        "each side and batch size in a fresh process; torch threads: sdscope {threads}, diffusers {}",
        py_threads.map_or("-".into(), |t| t.to_string())
    );

    let _ = writeln!(
        s,
        "\n{:>5}  {:<9}  {:>10}  {:>10}  {:>7}  {:>9}  {:>9}  {:>9}  {:>11}  agreement (rel. L2)",
        "batch", "side", "load", "collect", "items/s", "+load", "peak RSS", "bytes/item", "bytes/s"
    );
    for run in runs {
        let agreement = run.agreement.as_ref().map_or("-".into(), |(_, rel)| format!("{rel:.1e}"));
        row(&mut s, run.batch, &run.sdscope, &agreement);
        if let Some(d) = &run.diffusers {
            row(&mut s, run.batch, d, "");
            let _ = writeln!(
                s,
                "{:>5}  {:<9}  items/s {:.2}×, with loading {:.2}×, peak RSS {}",
                "",
                "ratio",
                run.sdscope.items_per_s / d.items_per_s,
                run.sdscope.items_per_s_with_load / d.items_per_s_with_load,
                match (run.sdscope.peak_rss_bytes, d.peak_rss_bytes) {
                    (Some(a), Some(b)) => format!("{:.2}×", a as f64 / b as f64),
                    _ => "-".into(),
                }
            );
        }
    }
    let _ = writeln!(
        s,
        "(load: sdscope loading + collector setup (manifest, weight hashes), diffusers imports + loading; items/s: \
         items / collect; +load: items/s including load and setup; bytes/s: per second of collect)"
    );

    let Some(ours) = best(runs.iter().map(|r| &r.sdscope)) else { return s };
    let Some(theirs) = best(runs.iter().filter_map(|r| r.diffusers.as_ref())) else {
        let _ = writeln!(
            s,
            "\nbest sdscope: batch {}, {:.3} items/s (diffusers not measured)",
            ours.batch, ours.items_per_s
        );
        return s;
    };
    let speed = ours.items_per_s / theirs.items_per_s;
    let _ = writeln!(
        s,
        "\nbest against best: sdscope batch {} {:.3} items/s, diffusers batch {} {:.3} items/s: {speed:.2}× \
         (with loading {:.2}×)",
        ours.batch,
        ours.items_per_s,
        theirs.batch,
        theirs.items_per_s,
        ours.items_per_s_with_load / theirs.items_per_s_with_load
    );
    let _ = writeln!(
        s,
        "bytes written: sdscope {}/item, {}/s; diffusers {}/item, {}/s",
        mb(ours.bytes_per_item),
        mb(ours.bytes_per_s()),
        mb(theirs.bytes_per_item),
        mb(theirs.bytes_per_s())
    );
    let _ = writeln!(
        s,
        "goal: items/s at least {GOAL_SPEED}× diffusers': {} ({:.3} vs {:.3} items/s, {speed:.2}×)",
        verdict(speed >= GOAL_SPEED),
        ours.items_per_s,
        theirs.items_per_s
    );
    let memory_ok = matches!((ours.peak_rss_bytes, theirs.peak_rss_bytes), (Some(a), Some(b)) if a <= b);
    let _ = writeln!(
        s,
        "goal: peak memory no higher than diffusers': {} ({} vs {}, at the best batch sizes)",
        verdict(memory_ok),
        gib(ours.peak_rss_bytes),
        gib(theirs.peak_rss_bytes)
    );
    s
}
