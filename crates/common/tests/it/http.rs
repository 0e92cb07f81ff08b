//! Trace context in and out.

use common::telemetry::{adopt_parent, current_trace_headers, current_trace_id, init_for_tests};

#[test]
fn a_received_traceparent_becomes_the_parent_and_travels_on() {
    init_for_tests();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let span = tracing::info_span!("handle");
    adopt_parent(
        &span,
        Some(&format!("00-{trace_id}-00f067aa0ba902b7-01")),
        None,
    );
    let _entered = span.enter();
    assert_eq!(current_trace_id().as_deref(), Some(trace_id));
    let outgoing = current_trace_headers();
    let traceparent = outgoing.get("traceparent").unwrap();
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-")),
        "{traceparent}"
    );
    assert!(
        !traceparent.contains("00f067aa0ba902b7"),
        "a new span id is sent on"
    );
}

#[test]
fn garbage_traceparent_starts_a_new_trace() {
    init_for_tests();
    let span = tracing::info_span!("handle");
    adopt_parent(&span, Some("garbage"), None);
    let _entered = span.enter();
    let id = current_trace_id().unwrap();
    assert_eq!(id.len(), 32);
}
