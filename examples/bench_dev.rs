//! Temporary driver for the benchmark (until main.rs wires `sdscope bench`).
use clap::Parser;

#[derive(Parser)]
struct Worker {
    #[command(flatten)]
    args: sdscope::bench::WorkerArgs,
}

fn main() -> sdscope::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(sdscope::bench::WORKER_SUBCOMMAND) {
        let w = Worker::parse_from(argv.iter().skip(1));
        return sdscope::bench::worker(&w.args);
    }
    let mut opts = sdscope::bench::BenchOptions { work_dir: "/tmp/sdbench".into(), ..Default::default() };
    if let Some(r) = argv.get(1) {
        opts.repeats = r.parse().unwrap();
    }
    if let Ok(m) = std::env::var("BENCH_MODEL") {
        opts.model = Some(m.into());
    }
    if std::env::var("BENCH_SKIP_PYTHON").is_ok() {
        opts.skip_python = true;
    }
    sdscope::bench::run(&opts)
}
