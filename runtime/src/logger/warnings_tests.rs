//! `crate::warn` and `crate::info` (the runtime's messages) as `tracing` events.

use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Records every event: level, target, message.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(Level, String, String)>>>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        let meta = event.metadata();
        if let Ok(mut events) = self.0.lock() {
            events.push((*meta.level(), meta.target().to_string(), message.0));
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn warnings_and_information_are_tracing_events_with_target_fulgur() {
    let capture = Capture::default();
    let no_subscriber =
        tracing::dispatcher::get_default(|d| d.is::<tracing::subscriber::NoSubscriber>());
    assert!(no_subscriber, "a test thread starts with no subscriber");
    assert!(!crate::has_subscriber());
    tracing::subscriber::with_default(capture.clone(), || {
        assert!(crate::has_subscriber());
        crate::warn("checkpoint not saved");
        crate::info("restored from `last.ckpt`");
    });
    let events = capture.0.lock().unwrap().clone();
    assert_eq!(
        events,
        [
            (
                Level::WARN,
                "fulgur".to_string(),
                "checkpoint not saved".to_string()
            ),
            (
                Level::INFO,
                "fulgur".to_string(),
                "restored from `last.ckpt`".to_string()
            ),
        ]
    );
}

/// Run by `stderr_has_the_line_only_without_a_subscriber` in a child process: one warning with no
/// subscriber, one with a subscriber (which must not reach standard error).
#[test]
fn child_warns_with_and_without_a_subscriber() {
    if std::env::var_os("FULGUR_WARNINGS_CHILD").is_none() {
        return;
    }
    crate::warn("printed without a subscriber");
    crate::info("information without a subscriber");
    tracing::subscriber::with_default(Capture::default(), || {
        crate::warn("captured by the subscriber");
    });
}

/// The default output is unchanged with no subscriber, and a subscriber takes the line off stderr.
#[test]
fn stderr_has_the_line_only_without_a_subscriber() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "logger::warnings_tests::child_warns_with_and_without_a_subscriber",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FULGUR_WARNINGS_CHILD", "1")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let fulgur: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("[fulgur]"))
        .collect();
    assert_eq!(
        fulgur,
        [
            "[fulgur] warning: printed without a subscriber",
            "[fulgur] information without a subscriber"
        ],
        "{stderr}"
    );
}
