//! The two text formats of a `/metrics` scrape. `prometheus-client` writes OpenMetrics 1.0;
//! a scraper that does not ask for it (curl, older Prometheus, many agents) gets the
//! Prometheus text format 0.0.4, which differs in a few lines: no `# EOF` and no `# UNIT`,
//! and a counter family is named with its `_total` suffix. Both the tracker and the peer's
//! node serve metrics, so the negotiation and the rewrite live here once.

/// Content type of OpenMetrics text, as `prometheus-client` writes it.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Content type of the Prometheus text format 0.0.4.
pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a request's `Accept` header prefers OpenMetrics over plain text (what
/// Prometheus sends: OpenMetrics at a higher `q` than `text/plain`). Without one, plain.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let (mut open, mut plain) = (0.0f32, 0.0f32);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => open = open.max(q),
            "text/plain" | "text/*" | "*/*" => plain = plain.max(q),
            _ => {}
        }
    }
    open > 0.0 && open >= plain
}

/// The body and content type to answer with: `openmetrics` as it is when the request
/// prefers it, else rewritten as Prometheus text 0.0.4.
pub fn negotiate(openmetrics: String, accept: Option<&str>) -> (&'static str, String) {
    if wants_openmetrics(accept) {
        (OPENMETRICS, openmetrics)
    } else {
        (PROMETHEUS, to_prometheus_text(&openmetrics))
    }
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4: drops `# EOF`, `# UNIT` and
/// counters' `_created` samples, names counter families `NAME_total` in `HELP` and `TYPE`,
/// says `untyped` for `unknown`, and unescapes `\"` in help text (0.0.4 escapes only `\\`
/// and `\n` there).
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let suffix = if counters.contains(name) {
                "_total"
            } else {
                ""
            };
            out.push_str(&format!(
                "# HELP {name}{suffix} {}\n",
                help.replace("\\\"", "\"")
            ));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), kind),
                "unknown" => (name.to_string(), "untyped"),
                _ => (name.to_string(), kind),
            };
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else {
            let series = line.split([' ', '{']).next().unwrap_or_default();
            let created = series
                .strip_suffix("_created")
                .is_some_and(|f| counters.contains(f));
            if !created {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: &str = "\
# HELP tessera_bytes Bytes \\\"moved\\\".
# TYPE tessera_bytes counter
# UNIT tessera_bytes bytes
tessera_bytes_total{dir=\"up\"} 7
tessera_bytes_created{dir=\"up\"} 1700000000.0
# HELP tessera_peers Peers by state.
# TYPE tessera_peers gauge
tessera_peers{state=\"up\"} 3
# HELP tessera_seconds Latency.
# TYPE tessera_seconds histogram
tessera_seconds_bucket{le=\"0.1\"} 1
tessera_seconds_bucket{le=\"+Inf\"} 2
tessera_seconds_sum 0.3
tessera_seconds_count 2
# TYPE tessera_misc unknown
tessera_misc 1
# EOF
";

    #[test]
    fn rewrites_openmetrics_as_prometheus_text() {
        let text = to_prometheus_text(OPEN);
        assert_eq!(
            text,
            "\
# HELP tessera_bytes_total Bytes \"moved\".
# TYPE tessera_bytes_total counter
tessera_bytes_total{dir=\"up\"} 7
# HELP tessera_peers Peers by state.
# TYPE tessera_peers gauge
tessera_peers{state=\"up\"} 3
# HELP tessera_seconds Latency.
# TYPE tessera_seconds histogram
tessera_seconds_bucket{le=\"0.1\"} 1
tessera_seconds_bucket{le=\"+Inf\"} 2
tessera_seconds_sum 0.3
tessera_seconds_count 2
# TYPE tessera_misc untyped
tessera_misc 1
"
        );
    }

    #[test]
    fn prefers_openmetrics_only_when_asked() {
        // What Prometheus 2.x and 3.x send, then curl, a browser and plain-text scrapers.
        let prom2 = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                     version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let prom3 = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
                     application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;\
                     escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert!(wants_openmetrics(Some(prom2)));
        assert!(wants_openmetrics(Some(prom3)));
        assert!(wants_openmetrics(Some("application/openmetrics-text")));
        for plain in [
            None,
            Some("*/*"),
            Some("text/html,application/xhtml+xml,*/*;q=0.8"),
            Some("text/plain;version=0.0.4"),
            Some("application/openmetrics-text;q=0.2,text/plain;q=0.9"),
            Some("application/openmetrics-text;q=0"),
        ] {
            assert!(!wants_openmetrics(plain), "{plain:?}");
        }
        let (ct, body) = negotiate(OPEN.to_string(), None);
        assert_eq!((ct, body.contains("# EOF")), (PROMETHEUS, false));
        let (ct, body) = negotiate(OPEN.to_string(), Some(prom3));
        assert_eq!((ct, body.as_str()), (OPENMETRICS, OPEN));
    }
}
