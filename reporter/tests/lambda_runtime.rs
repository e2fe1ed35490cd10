//! The real `fleet-reporter` binary under the Lambda runtime protocol.
//!
//! AWS's Runtime API (`/2018-06-01/runtime/invocation/next`, `…/{id}/response`) is
//! played by a small local HTTP server: it is the only stand-in here. The binary is
//! started the way Lambda starts a custom runtime (no arguments,
//! `AWS_LAMBDA_RUNTIME_API` set, configuration in `FLEET_REPORTER_*`), fetches the
//! events, runs them through `lambda_http` and the shared handler, and posts the
//! responses back in Lambda's wire format, which is what is checked.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use common::fixture;
use tokio::sync::mpsc;

#[derive(Clone)]
struct RuntimeApi {
    events: Arc<Mutex<VecDeque<(String, String)>>>,
    out: mpsc::UnboundedSender<(String, String, String)>,
}

async fn next(State(api): State<RuntimeApi>) -> (StatusCode, HeaderMap, String) {
    loop {
        let ev = api.events.lock().unwrap().pop_front();
        if let Some((id, body)) = ev {
            let mut h = HeaderMap::new();
            h.insert("lambda-runtime-aws-request-id", id.parse().unwrap());
            let deadline = jiff::Timestamp::now().as_millisecond() + 60_000;
            h.insert(
                "lambda-runtime-deadline-ms",
                deadline.to_string().parse().unwrap(),
            );
            h.insert(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:eu-west-1:123456789012:function:fleet-reporter"
                    .parse()
                    .unwrap(),
            );
            h.insert(
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000".parse().unwrap(),
            );
            h.insert("content-type", "application/json".parse().unwrap());
            return (StatusCode::OK, h, body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn respond(
    State(api): State<RuntimeApi>,
    Path((id, kind)): Path<(String, String)>,
    body: String,
) -> StatusCode {
    let _ = api.out.send((id, kind, body));
    StatusCode::ACCEPTED
}

async fn init_error(State(api): State<RuntimeApi>, body: String) -> StatusCode {
    let _ = api.out.send(("init".into(), "error".into(), body));
    StatusCode::ACCEPTED
}

fn fixture_event(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/lambda/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_answers_events_from_the_runtime_api() {
    let fx = fixture().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let api = RuntimeApi {
        events: Arc::new(Mutex::new(VecDeque::from([
            (
                "req-1".to_owned(),
                fixture_event("apigw_v2_stage_summary.json"),
            ),
            ("req-2".to_owned(), fixture_event("function_url_hosts.json")),
            ("req-3".to_owned(), fixture_event("apigw_v1_rest_host.json")),
        ]))),
        out: tx,
    };
    let app = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/{kind}", post(respond))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleet-reporter"))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "fleet-reporter")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/fleet-reporter")
        .env("FLEET_BUCKET", &fx.url)
        .env(
            "FLEET_REPORTER_TRUSTED_KEYS",
            fx.publisher.public().to_nix_string(),
        )
        .kill_on_drop(true)
        .spawn()
        .expect("start fleet-reporter");

    let mut got = std::collections::BTreeMap::new();
    while got.len() < 3 {
        let (id, kind, body) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the binary answers within 30 s")
            .unwrap();
        assert_eq!(kind, "response", "{id}: {body}");
        got.insert(
            id,
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        );
    }
    child.kill().await.unwrap();

    // API Gateway v2 with stage `prod`.
    let r = &got["req-1"];
    assert_eq!(r["statusCode"], 200, "{r}");
    assert_eq!(r["headers"]["content-type"], "application/json");
    assert!(
        r["headers"]["content-security-policy"]
            .as_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    assert_eq!(r["isBase64Encoded"], false);
    let s: serde_json::Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(s["hosts"], common::EXPECTED.len());
    assert_eq!(s["manifests"]["verified"], true);
    assert_eq!(s["states"]["flagged"], 6);

    // Function URL with a query string.
    let r = &got["req-2"];
    assert_eq!(r["statusCode"], 200, "{r}");
    let d: serde_json::Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    let names: Vec<_> = d["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].clone())
        .collect();
    assert_eq!(names, ["web-failed", "web-xss"]);

    // API Gateway REST (v1) with stage `v1`.
    let r = &got["req-3"];
    assert_eq!(r["statusCode"], 200, "{r}");
    let d: serde_json::Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(d["host"]["state"], "failed");
}
