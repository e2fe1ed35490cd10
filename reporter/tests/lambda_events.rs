//! The Lambda glue answers API Gateway (REST v1, HTTP API v2 with a stage) and Lambda
//! Function URL events: each fixture is parsed by `lambda_http` exactly as the
//! runtime does, then answered by the shared handler.

mod common;

use std::time::Duration;

use common::fixture;
use fleet_core::TrustedKeys;
use fleet_reporter::Reporter;
use fleet_reporter::config::ReporterOptions;
use lambda_http::Body;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn event(name: &str) -> lambda_http::Request {
    let path = format!(
        "{}/tests/fixtures/lambda/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn reporter(bucket: fleet_core::Bucket, trusted: &TrustedKeys, token: Option<&str>) -> Reporter {
    Reporter::new(
        bucket,
        ReporterOptions {
            trusted: trusted.clone(),
            cache_ttl: Duration::from_secs(60),
            token: token.map(str::to_owned),
            ..Default::default()
        },
    )
}

fn text(b: &Body) -> &str {
    match b {
        Body::Text(t) => t,
        other => panic!("expected a text body, got {other:?}"),
    }
}

fn json(b: &Body) -> serde_json::Value {
    serde_json::from_str(text(b)).unwrap()
}

#[tokio::test]
async fn api_gateway_v2_with_a_stage() {
    let fx = fixture().await;
    let r = reporter(fx.bucket.clone(), &fx.trusted, None);

    let res = fleet_reporter::lambda::invoke(&r, event("apigw_v2_stage_summary.json")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert!(
        res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    let s = json(res.body());
    assert_eq!(s["hosts"], common::EXPECTED.len());
    assert_eq!(s["states"]["flagged"], 6);

    let res = fleet_reporter::lambda::invoke(&r, event("apigw_v2_stage_page.json")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    let page = text(res.body());
    assert!(page.contains("src=\"assets/app.js\"") && page.contains("<table id=\"hosts\">"));

    let res = fleet_reporter::lambda::invoke(&r, event("apigw_v2_bare_stage.json")).await;
    assert_eq!(res.status(), 308);
    assert_eq!(res.headers()["location"], "/prod/");
}

#[tokio::test]
async fn api_gateway_rest_v1() {
    let fx = fixture().await;
    let r = reporter(fx.bucket.clone(), &fx.trusted, None);
    let res = fleet_reporter::lambda::invoke(&r, event("apigw_v1_rest_host.json")).await;
    assert_eq!(res.status(), 200, "{:?}", res.body());
    let d = json(res.body());
    assert_eq!(d["host"]["host"], "web-failed");
    assert_eq!(d["host"]["state"], "failed");
    assert_eq!(d["events"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn function_url_with_and_without_the_token() {
    let fx = fixture().await;
    let r = reporter(fx.bucket.clone(), &fx.trusted, Some(TOKEN));

    let res = fleet_reporter::lambda::invoke(&r, event("function_url_hosts.json")).await;
    assert_eq!(res.status(), 200, "{:?}", res.body());
    let d = json(res.body());
    let names: Vec<_> = d["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].clone())
        .collect();
    assert_eq!(names, ["web-failed", "web-xss"]);

    let res = fleet_reporter::lambda::invoke(&r, event("function_url_metrics_no_token.json")).await;
    assert_eq!(res.status(), 401);
    assert!(
        res.headers()
            .get_all("www-authenticate")
            .iter()
            .any(|v| v.to_str().unwrap().starts_with("Bearer"))
    );
    assert!(text(res.body()).contains("token is required"));

    let res = fleet_reporter::lambda::invoke(&r, event("function_url_post.json")).await;
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "GET, HEAD");
}

#[tokio::test]
async fn metrics_through_a_function_url() {
    let fx = fixture().await;
    let r = reporter(fx.bucket.clone(), &fx.trusted, None);
    let res = fleet_reporter::lambda::invoke(&r, event("function_url_metrics_no_token.json")).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let m = text(res.body());
    assert!(m.contains("fleet_hosts{state=\"flagged\"} 6\n"), "{m}");
    assert!(
        m.contains("fleet_host_state{host=\"web-xss\",state=\"failed\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("fleet_host_last_seen_seconds{host=\"web-ok\"} "),
        "{m}"
    );
}
