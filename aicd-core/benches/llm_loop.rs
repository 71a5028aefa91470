//! What the LLM agent's tool loop costs on top of the model: the recorded conversation of the
//! core's proofs (`tests/cassettes/<provider>/resolves_an_issue.json`, 12 turns: plan, code,
//! review, code again, review again) replayed from a local mock server with no model latency,
//! on the fixture repository in memory. Reports, per provider, the wall time per turn (the
//! agent's own work: building the request, parsing the answer, running the tools, plus one
//! loopback HTTP exchange), the request size per turn, and the tokens and cost per step as the
//! cassette's usage blocks say.
//!
//! `cargo bench -p aicd-core --bench llm_loop`; `AICD_BENCH_RUNS` sets the repetitions (default
//! 20). Run without `--bench` (as `cargo test --benches` does), it replays once, as a smoke test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aicd_agent_api::llm::cassette::Cassette;
use aicd_agent_api::llm::{HttpSettings, LlmAgent, LlmConfig, ModelConfig, Provider};
use aicd_agent_api::{Agent, Budget, Feedback, Issue, MemoryRepoView, RepoRef, TaskContext, Usage};
use aicd_testkit::cassette::{Recording, cassettes_dir};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/calc");

fn fixture() -> MemoryRepoView {
    let mut view = MemoryRepoView::new();
    for path in ["README.md", "calc/__init__.py", "calc/ops.py", "tests/test_ops.py"] {
        view.insert(path, std::fs::read(format!("{FIXTURE}/{path}")).expect("the fixture"));
    }
    view
}

/// One replay of the whole conversation; the usage of each step.
async fn replay(provider: Provider) -> Vec<(&'static str, Usage)> {
    let path = cassettes_dir(env!("CARGO_MANIFEST_DIR")).join(provider.as_str()).join("resolves_an_issue.json");
    let recording = Recording::start(path).await;
    let suffix = if provider == Provider::OpenAi { "/v1" } else { "" };
    let model = ModelConfig::new(provider, recording.model("m"), recording.api_key()).at(recording.base_url(suffix));
    let mut config = LlmConfig::new(model);
    config.max_output_tokens = 1024;
    config.http = HttpSettings { max_retries: 0, ..HttpSettings::default() };
    let agent = LlmAgent::with_transport(config, recording.transport()).expect("an agent");
    let mut issue = Issue::new(
        "divide() multiplies instead of dividing",
        "`divide(6, 3)` returns 18; it should return 2. See calc/ops.py.",
    );
    issue.number = Some(7);
    issue.author = Some("octocat".into());
    let ctx =
        TaskContext::new("bench", issue, RepoRef::new("acme/calc", "main"), Budget::unlimited(), Arc::new(fixture()));
    let plan = agent.plan(&ctx).await.expect("a plan");
    let first = agent.code(&ctx, &plan.value, None).await.expect("a change");
    let review = agent.review(&ctx, &plan.value, &first.value).await.expect("a review");
    let feedback = Feedback::from_review(1, &review.value).with_previous(first.value.clone());
    let second = agent.code(&ctx, &plan.value, Some(&feedback)).await.expect("a second change");
    let approval = agent.review(&ctx, &plan.value, &second.value).await.expect("an approval");
    recording.finish();
    vec![
        ("planning", plan.usage),
        ("coding", first.usage),
        ("reviewing", review.usage),
        ("coding", second.usage),
        ("reviewing", approval.usage),
    ]
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let runs: usize =
        if bench { std::env::var("AICD_BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(20) } else { 1 };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
    for provider in [Provider::OpenAi, Provider::Anthropic] {
        let path = cassettes_dir(env!("CARGO_MANIFEST_DIR")).join(provider.as_str()).join("resolves_an_issue.json");
        let cassette = Cassette::load(&path).expect("the cassette");
        let turns = cassette.interactions.len();
        let sizes: Vec<usize> = cassette.interactions.iter().map(|i| i.request.body.to_string().len()).collect();
        // Warm up (connections, caches), then time.
        let steps = runtime.block_on(replay(provider));
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let started = Instant::now();
            runtime.block_on(replay(provider));
            times.push(started.elapsed());
        }
        times.sort();
        let median = times[times.len() / 2];
        let per_turn = median / u32::try_from(turns).unwrap_or(1);
        println!("{provider}: {turns} turns, {runs} runs");
        println!(
            "  wall time per job {:.1} ms (median), per turn {:.2} ms, min {:.1} ms, max {:.1} ms",
            ms(median),
            ms(per_turn),
            ms(times[0]),
            ms(times[times.len() - 1])
        );
        println!(
            "  request size per turn: first {} B, last {} B, mean {} B",
            sizes[0],
            sizes[turns - 1],
            sizes.iter().sum::<usize>() / turns
        );
        let mut total = Usage::default();
        for (step, usage) in &steps {
            println!(
                "  {step:<9} {:>6} tokens in, {:>4} out, ${:.4}",
                usage.input_tokens,
                usage.output_tokens,
                usage.cost_micros as f64 / 1e6
            );
            total.accumulate(usage);
        }
        println!(
            "  job       {:>6} tokens in, {:>4} out, ${:.4} (the cassette's usage blocks, written by hand)",
            total.input_tokens,
            total.output_tokens,
            total.cost_micros as f64 / 1e6
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
