//! Reading the signed audit chain in tests: what it records, decoded without
//! checking signatures (the `audit_chain` tests and `audit verify` check those).

use fleet_core::audit::AuditEntry;
use fleet_core::audit_chain::ChainEntry;
use fleet_core::{Bucket, Key, KeyPrefix};

/// Every manifest the signed audit chain records, oldest entry first, in the shape
/// of the older entries. The entries' signatures are not checked here (the
/// `audit_chain` tests do): this reads what the chain says.
pub async fn audit_entries(bucket: &Bucket) -> Vec<AuditEntry> {
    chain_entries(bucket)
        .await
        .iter()
        .flat_map(ChainEntry::manifest_rows)
        .collect()
}

/// Every entry of the signed audit chain, by index, payloads decoded unverified.
pub async fn chain_entries(bucket: &Bucket) -> Vec<ChainEntry> {
    use base64::Engine;
    let mut list = bucket.list(&KeyPrefix::audit_chain()).await.unwrap();
    list.sort_by(|a, b| a.key.cmp(&b.key));
    let mut out = Vec::new();
    for o in list {
        let i = Key::audit_chain_index(&o.key).unwrap();
        let bytes = bucket
            .get(&Key::audit_chain(i), 1 << 20)
            .await
            .unwrap()
            .bytes;
        let env: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let payload = base64::engine::general_purpose::STANDARD
            .decode(env["payload"].as_str().unwrap())
            .unwrap();
        out.push(serde_json::from_slice(&payload).unwrap());
    }
    out
}
