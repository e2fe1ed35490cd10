//! `fleet-reporter lambda`: the AWS Lambda runtime loop around the shared handler.
//!
//! The configuration comes from the function's environment (`FLEET_REPORTER_*`) or
//! a file named by `FLEET_REPORTER_CONFIG`. The reporter, its bucket client and its
//! in-process cache live as long as the execution environment, so warm invocations
//! reuse the last aggregation.

use std::convert::Infallible;
use std::sync::Arc;

use anyhow::Context;
use fleet_core::{Bucket, BucketOptions};
use fleet_reporter::Reporter;
use fleet_reporter::config::Config;

/// Runs until the Lambda runtime stops the process.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let s = config.resolve()?;
    let bucket = Bucket::open(&s.bucket, &BucketOptions::default())
        .with_context(|| format!("opening bucket {}", s.bucket))?;
    let reporter = Arc::new(Reporter::new(bucket, s.options));
    lambda_http::run(lambda_http::service_fn(move |req| {
        let reporter = reporter.clone();
        async move { Ok::<_, Infallible>(fleet_reporter::lambda::invoke(&reporter, req).await) }
    }))
    .await
    .map_err(|e| anyhow::anyhow!("the Lambda runtime stopped: {e}"))
}
