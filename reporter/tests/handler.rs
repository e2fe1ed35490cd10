//! The shared HTTP handler: routes, security headers, authentication, errors.

mod common;

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use common::fixture;
use fleet_core::{Bucket, BucketOptions, BucketUrl};
use fleet_reporter::Reporter;
use fleet_reporter::config::ReporterOptions;
use http::{Method, Request, Response};

const TOKEN: &str = "s3cret-token-0123456789";

fn req(method: Method, uri: &str, auth: Option<&str>) -> Request<Bytes> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    b.body(Bytes::new()).unwrap()
}

async fn call(r: &Reporter, uri: &str, auth: Option<&str>) -> Response<Bytes> {
    r.handle(req(Method::GET, uri, auth)).await
}

fn body(res: &Response<Bytes>) -> &str {
    std::str::from_utf8(res.body()).unwrap()
}

#[tokio::test]
async fn routes_and_security_headers() {
    let fx = fixture().await;
    let r = Reporter::new(fx.bucket.clone(), ReporterOptions::default());
    for (uri, status, ctype) in [
        ("/", 200, "text/html; charset=utf-8"),
        ("/index.html", 200, "text/html; charset=utf-8"),
        ("/assets/app.js", 200, "text/javascript; charset=utf-8"),
        ("/assets/app.css", 200, "text/css; charset=utf-8"),
        ("/api/v1/summary", 200, "application/json"),
        (
            "/api/v1/hosts?sort=-last-seen&limit=3",
            200,
            "application/json",
        ),
        ("/api/v1/hosts/web-ok", 200, "application/json"),
        ("/metrics", 200, "text/plain; version=0.0.4; charset=utf-8"),
        ("/healthz", 200, "text/plain; charset=utf-8"),
        ("/api/v1/hosts/Web_OK", 400, "application/json"),
        ("/api/v1/hosts/..%2f..%2fetc", 400, "application/json"),
        ("/api/v1/hosts/nobody", 404, "application/json"),
        ("/api/v1/hosts?state=bogus", 400, "application/json"),
        ("/nope", 404, "application/json"),
    ] {
        let res = call(&r, uri, None).await;
        assert_eq!(res.status(), status, "{uri}: {}", body(&res));
        let h = res.headers();
        assert_eq!(h["content-type"], ctype, "{uri}");
        assert_eq!(
            h["content-security-policy"],
            fleet_reporter::response::CSP,
            "{uri}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{uri}");
        assert!(h.get("access-control-allow-origin").is_none(), "{uri}");
    }
    let page = call(&r, "/api/v1/hosts?limit=3", None).await;
    let v: serde_json::Value = serde_json::from_slice(page.body()).unwrap();
    assert_eq!(v["hosts"].as_array().unwrap().len(), 3);
    assert_eq!(v["matched"], common::EXPECTED.len());

    let head = r.handle(req(Method::HEAD, "/api/v1/summary", None)).await;
    assert_eq!(head.status(), 200);
    assert!(head.body().is_empty());
    let post = r.handle(req(Method::POST, "/api/v1/summary", None)).await;
    assert_eq!(post.status(), 405);
}

#[tokio::test]
async fn the_token_is_required_when_configured() {
    let fx = fixture().await;
    let r = Reporter::new(
        fx.bucket.clone(),
        ReporterOptions {
            token: Some(TOKEN.into()),
            ..Default::default()
        },
    );
    let basic = |user_pass: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    };
    for (auth, want) in [
        (None, 401),
        (Some("Bearer wrong".to_owned()), 401),
        (Some(format!("Bearer {TOKEN}x")), 401),
        (Some(format!("bearer {TOKEN}")), 401),
        (Some(TOKEN.to_owned()), 401),
        (Some(basic(&format!("admin:{TOKEN}z"))), 401),
        (Some("Basic !!!".to_owned()), 401),
        (Some(format!("Bearer {TOKEN}")), 200),
        (Some(basic(&format!("admin:{TOKEN}"))), 200),
    ] {
        for uri in ["/", "/api/v1/summary", "/metrics", "/api/v1/hosts/web-ok"] {
            let res = call(&r, uri, auth.as_deref()).await;
            assert_eq!(res.status(), want, "{uri} with {auth:?}");
            if want == 401 {
                let challenges: Vec<_> = res.headers().get_all("www-authenticate").iter().collect();
                assert!(
                    challenges
                        .iter()
                        .any(|c| c.to_str().unwrap().starts_with("Basic "))
                );
                assert!(!body(&res).contains("web-ok"));
            }
        }
    }
    // Liveness needs no token and reveals nothing.
    let res = call(&r, "/healthz", None).await;
    assert_eq!((res.status().as_u16(), body(&res)), (200, "ok\n"));
}

#[tokio::test]
async fn an_unreachable_bucket_is_a_503_that_names_the_store() {
    // Nothing listens on port 9 of loopback.
    let url = BucketUrl::parse("s3://fleet-test?endpoint=http://127.0.0.1:9").unwrap();
    let bucket = Bucket::open(
        &url,
        &BucketOptions {
            max_retries: 0,
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            credentials: Some(fleet_core::S3Credentials {
                access_key_id: "x".into(),
                secret_access_key: "y".into(),
                session_token: None,
            }),
        },
    )
    .unwrap();
    let r = Reporter::new(bucket, ReporterOptions::default());
    let res = call(&r, "/api/v1/summary", None).await;
    assert_eq!(res.status(), 503);
    assert!(body(&res).contains("127.0.0.1:9"), "{}", body(&res));
    // The page itself still loads (it shows the API's error).
    assert_eq!(call(&r, "/", None).await.status(), 200);
}
