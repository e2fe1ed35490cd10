//! The HTML page and its script and style, embedded in the binary.
//!
//! The page is static: it carries no host data at all. Its script fetches
//! `api/v1/summary`, `api/v1/hosts` and `api/v1/hosts/<host>` (relative URLs, so the
//! page works under an API Gateway stage path too) and builds every element with
//! `document.createElement` and `textContent`; it never assigns `innerHTML`, so a host
//! that writes `<script>` into its status shows that text and nothing runs. The
//! Content-Security-Policy (`script-src 'self'`, see [`crate::response::CSP`]) would block
//! inline script even if that rule were broken. No asset comes from a CDN: the page
//! works offline.
//!
//! Features: summary tiles per state (click to filter), filter by state and name,
//! sort (failing first by default; click a column header), paging for large fleets,
//! a host detail panel with its newest events, and auto-refresh every 30 s.

/// The page.
pub const PAGE: &str = include_str!("../assets/index.html");
/// Its script.
pub const SCRIPT: &str = include_str!("../assets/app.js");
/// Its style sheet.
pub const STYLE: &str = include_str!("../assets/app.css");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_loads_only_local_assets_and_has_no_inline_code() {
        assert!(PAGE.contains("src=\"assets/app.js\""));
        assert!(PAGE.contains("href=\"assets/app.css\""));
        assert!(!PAGE.contains("http://") && !PAGE.contains("https://"));
        // Only the one external script tag; no inline handlers.
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert!(!PAGE.contains(" on") || !PAGE.contains("onclick="));
        assert!(!SCRIPT.contains("http://") && !SCRIPT.contains("https://"));
    }

    #[test]
    fn script_never_uses_html_sinks() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!SCRIPT.contains(sink), "app.js uses {sink}");
        }
    }
}
