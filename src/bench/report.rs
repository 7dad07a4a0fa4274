//! The table `sdscope bench` prints: times, ratios, load times, peak memory and the verdict on each goal.

use std::path::Path;

use super::{
    best, median, worst_norm_difference, BenchOptions, Case, SideReport, WeightSizes, GOAL_FULL, GOAL_MEMORY, GOAL_MID,
};

pub(super) fn gib(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "n/a".to_string(), |b| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64))
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn seconds(t: f64) -> String {
    if t.is_nan() {
        "-".into()
    } else {
        format!("{t:.2} s")
    }
}

fn ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}×"))
}

pub(super) fn render(opts: &BenchOptions, model: &Path, sizes: &WeightSizes, cases: &[Case]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let threads = cases.first().map_or(0, |c| c.sdscope.threads);
    let py_threads = cases.iter().find_map(|c| c.diffusers.as_ref().map(|d| d.threads));
    let _ = writeln!(s, "\nsdscope bench: {}, {}×{} image, CPU", model.display(), opts.size, opts.size);
    let _ = writeln!(
        s,
        "best of {} extractions per case, each side of each case in a fresh process; torch threads: sdscope \
         {threads}, diffusers {}",
        opts.repeats,
        py_threads.map_or("-".into(), |t| t.to_string()),
    );
    let _ = writeln!(
        s,
        "weights: {} in files (unet {}, vae {}, text encoder {}); sdscope holds {} (no VAE decoder)",
        gib(Some(sizes.files)),
        gib(Some(sizes.unet)),
        gib(Some(sizes.vae)),
        gib(Some(sizes.text_encoder)),
        gib(Some(sizes.held))
    );

    // Extraction times.
    let mut goals: Vec<(String, bool)> = Vec::new();
    let _ = writeln!(s, "\nextraction of a new image (prompt, VAE encoding, noise, U-Net pass):");
    let _ = writeln!(
        s,
        "{:<22} {:>10} {:>10} {:>7} {:>13}   goal",
        "positions", "sdscope", "diffusers", "ratio", "median ratio"
    );
    for case in cases {
        let label = if case.sdscope.positions.len() > 1 {
            format!("{} ({})", case.name, case.sdscope.positions.len())
        } else {
            case.name.to_string()
        };
        let ours = case.sdscope.best_s();
        let theirs = case.diffusers.as_ref().map_or(f64::NAN, SideReport::best_s);
        let r = case.diffusers.as_ref().map(|d| ours / d.best_s());
        let median_r = case.diffusers.as_ref().map(|d| case.sdscope.median_s() / d.median_s());
        let goal = match case.name {
            "mid_block" => Some(GOAL_MID),
            "all top-level" => Some(GOAL_FULL),
            _ => None,
        };
        let goal_text = match (goal, r) {
            (Some(g), Some(r)) => {
                goals.push((format!("{} ≤ {g:.1}× diffusers' time", case.name), r <= g));
                format!("≤ {g:.1}×: {}", verdict(r <= g))
            }
            (Some(g), None) => format!("≤ {g:.1}×"),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "{label:<22} {:>10} {:>10} {:>7} {:>13}   {goal_text}",
            seconds(ours),
            seconds(theirs),
            ratio(r),
            ratio(median_r)
        );
    }
    let _ = writeln!(s, "\nthe same image again (sdscope reuses its cached VAE posterior; diffusers encodes again):");
    for case in cases {
        let ours = best(&case.sdscope.cached_times_s);
        let theirs = case.diffusers.as_ref().map_or(f64::NAN, SideReport::best_s);
        let r = case.diffusers.as_ref().map(|d| ours / d.best_s());
        let _ = writeln!(s, "{:<22} {:>10} {:>10} {:>7}", case.name, seconds(ours), seconds(theirs), ratio(r));
    }

    // Load time.
    let med = |values: Vec<f64>| if values.is_empty() { "-".to_string() } else { format!("{:.1} s", median(&values)) };
    let first = |r: &SideReport| r.load_s + r.import_s.unwrap_or(0.0) + r.times_s.first().copied().unwrap_or(f64::NAN);
    let _ = writeln!(
        s,
        "\nload time (median over the {} processes): sdscope {}, diffusers {} (+ {} of Python imports; diffusers maps \
         the files and reads the weights during the first pass)",
        cases.len(),
        med(cases.iter().map(|c| c.sdscope.load_s).collect()),
        med(cases.iter().filter_map(|c| Some(c.diffusers.as_ref()?.load_s)).collect()),
        med(cases.iter().filter_map(|c| c.diffusers.as_ref()?.import_s).collect()),
    );
    let _ = writeln!(
        s,
        "start to first result (imports + load + first extraction), median: sdscope {}, diffusers {}",
        med(cases.iter().map(|c| first(&c.sdscope)).collect()),
        med(cases.iter().filter_map(|c| Some(first(c.diffusers.as_ref()?))).collect()),
    );

    // Peak memory.
    let _ = writeln!(
        s,
        "\npeak memory (VmHWM for sdscope, ru_maxrss for Python), and as a multiple of the weights' files ({}):",
        gib(Some(sizes.files))
    );
    let _ = writeln!(s, "{:<22} {:>22} {:>22}", "process", "sdscope", "diffusers");
    let mult = |b: Option<u64>| {
        b.map_or_else(|| "-".to_string(), |b| format!("{} ({:.2}×)", gib(Some(b)), b as f64 / sizes.files as f64))
    };
    let _ = writeln!(
        s,
        "{:<22} {:>22} {:>22}",
        "after loading",
        mult(cases.iter().filter_map(|c| c.sdscope.peak_rss_after_load_bytes).max()),
        mult(cases.iter().filter_map(|c| c.diffusers.as_ref()?.peak_rss_after_load_bytes).max())
    );
    for case in cases {
        let _ = writeln!(
            s,
            "{:<22} {:>22} {:>22}",
            case.name,
            mult(case.sdscope.peak_rss_bytes),
            mult(case.diffusers.as_ref().and_then(|d| d.peak_rss_bytes))
        );
    }
    if let Some(peak) = cases.iter().filter_map(|c| c.sdscope.peak_rss_bytes).max() {
        goals.push((
            format!("sdscope peak memory ≤ {GOAL_MEMORY:.1}× the weights' size"),
            peak as f64 <= GOAL_MEMORY * sizes.files as f64,
        ));
    }

    let agreement: Vec<String> = cases
        .iter()
        .filter_map(|c| c.diffusers.as_ref().map(|d| (c.name, worst_norm_difference(&c.sdscope, d))))
        .map(|(n, (p, r))| format!("{n} {r:.1e} (at {p})"))
        .collect();
    if !agreement.is_empty() {
        let _ =
            writeln!(s, "\nsame outputs? largest relative difference of the captured norms: {}", agreement.join(", "));
    }
    let _ = writeln!(s, "\ngoals:");
    for (goal, ok) in &goals {
        let _ = writeln!(s, "  {goal}: {}", verdict(*ok));
    }
    s
}

/// The zero-copy loading figures: load times (warm, second, cold), private and file-backed memory.
pub(super) fn render_loading(sizes: &WeightSizes, cases: &[Case], cold: &SideReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let weights = sizes.files as f64;
    let times = |f: &dyn Fn(&SideReport) -> Option<f64>| cases.iter().filter_map(|c| f(&c.sdscope)).collect::<Vec<_>>();
    let warm = median(&times(&|r| Some(r.load_s)));
    let second = median(&times(&|r| r.second_load_s));
    let _ = writeln!(s, "\nzero-copy loading (weights memory-mapped, read on first use):");
    let _ =
        writeln!(s, "  load, warm page cache (median):   {}   goal ≤ 0.30 s: {}", seconds(warm), verdict(warm <= 0.3));
    let _ = writeln!(
        s,
        "  second load in the same process:  {}   goal ≤ 0.10 s: {}",
        seconds(second),
        verdict(second <= 0.1)
    );
    if let Some(mid) = cases.iter().find(|c| c.name == "mid_block") {
        let (new, cached) = (mid.sdscope.best_s(), best(&mid.sdscope.cached_times_s));
        let _ = writeln!(
            s,
            "  where mid_block's time goes: VAE encoding + prompt (new − cached image) {}, U-Net up to mid_block {}",
            seconds(new - cached),
            seconds(cached)
        );
    }
    let first_warm = cases.iter().find(|c| c.name == "mid_block").and_then(|c| c.sdscope.times_s.first().copied());
    let touched = cold.memory_end.map(|m| m.file);
    let _ = writeln!(
        s,
        "  cold page cache: load {}, first mid_block extraction {} (warm: {}), weight pages read {} of {}",
        seconds(cold.load_s),
        seconds(cold.times_s.first().copied().unwrap_or(f64::NAN)),
        seconds(first_warm.unwrap_or(f64::NAN)),
        gib(touched),
        gib(Some(sizes.files)),
    );
    let _ =
        writeln!(s, "  resident memory (private = anonymous pages, file = mapped weight pages), × the weights' files:");
    let frac = |b: u64| format!("{} ({:.2}×)", gib(Some(b)), b as f64 / weights);
    for case in cases {
        let (Some(load), Some(end)) = (case.sdscope.memory_after_load, case.sdscope.memory_end) else { continue };
        let _ = writeln!(
            s,
            "  {:<20} after load: private {}, file {};  end: private {}, file {};  peak {}",
            case.name,
            frac(load.anon),
            frac(load.file),
            frac(end.anon),
            frac(end.file),
            frac(end.peak)
        );
    }
    if let Some(m) = cases.iter().find(|c| c.name == "mid_block").and_then(|c| c.sdscope.memory_end) {
        let private = cases.iter().filter_map(|c| c.sdscope.memory_after_load.map(|l| l.anon)).max().unwrap_or(0);
        let _ = writeln!(
            s,
            "  goals: private after load ≤ 0.1× the weights: {}; mid_block peak ≤ 1.1× the weights: {}",
            verdict(private as f64 <= 0.1 * weights),
            verdict(m.peak as f64 <= 1.1 * weights)
        );
    }
    s
}
