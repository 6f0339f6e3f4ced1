//! Live reload of `roles.d`: inotify on the directory and on its parent (so
//! a directory created, replaced or removed after the start is noticed),
//! SIGHUP, and a config reload through the admin socket. A change is read as a whole set; a set with a bad file is
//! refused, reported with file, line and reason, and the last good set stays
//! in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use inotify::{Inotify, WatchMask};

use super::Assignments;
use super::files::Snapshot;
use super::policy::Policy;

/// What to do after the rules changed (drop credentials no rule names any
/// more, prefetch the new ones).
pub type OnChange = Arc<dyn Fn() + Send + Sync>;

/// The state of the rule files, for `imds-agent status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RulesStatus {
    /// The directory.
    pub dir: PathBuf,
    /// Whether it exists.
    pub present: bool,
    /// Rule files in force.
    pub files: usize,
    /// Rules in force.
    pub rules: usize,
    /// Why the last change was refused, if it was (the rules in force are
    /// then the last good set).
    pub refused: Option<String>,
}

/// Shared between the watcher and the admin socket.
pub type SharedStatus = Arc<std::sync::Mutex<RulesStatus>>;

/// How long a config reload waits for the watcher to read the rules.
const NUDGE_WAIT: Duration = Duration::from_secs(10);

/// A request to read the rules again, answered with their state after.
type Nudge = tokio::sync::oneshot::Sender<RulesStatus>;

/// Has the watcher read the rules again now (a config reload through the
/// admin socket) and says how that went.
#[derive(Debug, Clone)]
pub struct RulesNudge(tokio::sync::mpsc::Sender<Nudge>);

/// The watcher's end of a [`RulesNudge`].
#[derive(Debug)]
pub struct Nudges(tokio::sync::mpsc::Receiver<Nudge>);

impl RulesNudge {
    pub fn new() -> (Self, Nudges) {
        let (send, receive) = tokio::sync::mpsc::channel(16);
        (Self(send), Nudges(receive))
    }

    /// The rules' state once the watcher read them again; `None` when no
    /// watcher answers in time.
    pub async fn reload(&self) -> Option<RulesStatus> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.0.send(answer).await.ok()?;
        tokio::time::timeout(NUDGE_WAIT, answered).await.ok()?.ok()
    }
}

/// Editors and `cp` make several events per save: wait this long for the
/// burst to end before reading.
const SETTLE: Duration = Duration::from_millis(150);

/// Watches `dir` forever, starting from `current` (the set loaded at
/// start); reads it again at every SIGHUP and whenever `nudge` is notified
/// (a config reload through the admin socket).
pub async fn watch(
    dir: PathBuf,
    current: Snapshot,
    assignments: Arc<Assignments>,
    status: SharedStatus,
    on_change: OnChange,
    policy: Policy,
    mut nudges: Nudges,
) {
    let mut last = current;
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!(error = %e, "cannot catch SIGHUP; role rules reload on file changes only");
            None
        }
    };
    let inotify = Inotify::init().and_then(|inotify| {
        let mut watches = inotify.watches();
        // The parent says when the directory itself appears or goes.
        if let Some(parent) = dir.parent() {
            watches.add(
                parent,
                WatchMask::CREATE | WatchMask::DELETE | WatchMask::MOVED_TO | WatchMask::MOVED_FROM,
            )?;
        }
        Ok(inotify)
    });
    let mut events = match inotify.and_then(|i| i.into_event_stream([0u8; 4096])) {
        Ok(stream) => Some(stream),
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the role rules; they reload on SIGHUP only");
            None
        }
    };
    if let Some(stream) = &events {
        watch_dir(stream.watches(), &dir);
    }
    // A change made between the load at start and the watch just added
    // raised no event: look once now.
    reload(&dir, &mut last, &assignments, &status, &on_change, &policy);
    let mut waiting = Vec::new();
    loop {
        if let Some(stream) = &events {
            watch_dir(stream.watches(), &dir);
        }
        let woke = tokio::select! {
            event = next_event(&mut events) => event,
            signal = next_signal(&mut hangup) => signal,
            nudge = nudges.0.recv(), if !nudges.0.is_closed() => {
                waiting.extend(nudge);
                true
            }
        };
        if !woke {
            // Neither inotify nor SIGHUP works any more.
            return;
        }
        tokio::time::sleep(SETTLE).await;
        if let Some(stream) = &mut events {
            // Drain the rest of the burst.
            while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, stream.next()).await {}
        }
        reload(&dir, &mut last, &assignments, &status, &on_change, &policy);
        // Every nudge that came meanwhile is answered by this read.
        while let Ok(nudge) = nudges.0.try_recv() {
            waiting.push(nudge);
        }
        let now = lock(&status).clone();
        for nudge in waiting.drain(..) {
            let _ = nudge.send(now.clone());
        }
    }
}

fn watch_dir(mut watches: inotify::Watches, dir: &Path) {
    let mask = WatchMask::CLOSE_WRITE
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::MODIFY
        | WatchMask::ATTRIB;
    // Adding a watch that exists is a no-op; a missing directory is
    // watched once its parent says it appeared.
    let _ = watches.add(dir, mask);
}

async fn next_event(events: &mut Option<inotify::EventStream<[u8; 4096]>>) -> bool {
    match events {
        Some(stream) => match stream.next().await {
            Some(Ok(_)) => true,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "inotify failed; role rules reload on SIGHUP only");
                *events = None;
                true
            }
            None => {
                *events = None;
                true
            }
        },
        None => std::future::pending().await,
    }
}

async fn next_signal(hangup: &mut Option<tokio::signal::unix::Signal>) -> bool {
    match hangup {
        Some(signal) => {
            let got = signal.recv().await.is_some();
            if got {
                // The config file reloads on the same signal (`reload.rs`).
                tracing::info!("SIGHUP: reloading role rules");
            }
            got
        }
        None => std::future::pending().await,
    }
}

/// Reads `dir` again and, if it changed and parses, puts the new rules in
/// force. Returns whether they changed.
pub fn reload(
    dir: &Path,
    last: &mut Snapshot,
    assignments: &Assignments,
    status: &SharedStatus,
    on_change: &OnChange,
    policy: &Policy,
) -> bool {
    let snapshot = match Snapshot::read(dir) {
        Ok(snapshot) => snapshot,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the role rules; the last good set stays in force");
            lock(status).refused = Some(e.to_string());
            return false;
        }
    };
    if snapshot == *last {
        return false;
    }
    let parsed = snapshot
        .parse()
        .map_err(|errors| errors.iter().map(ToString::to_string).collect())
        .and_then(|rules| {
            let problems = policy.problems(&rules);
            if problems.is_empty() {
                Ok(rules)
            } else {
                Err(problems)
            }
        });
    match parsed {
        Ok(rules) => {
            tracing::info!(
                dir = %dir.display(),
                files = snapshot.len(),
                rules = rules.len(),
                "role rules reloaded"
            );
            *lock(status) = RulesStatus {
                dir: dir.to_owned(),
                present: !snapshot.missing(),
                files: snapshot.len(),
                rules: rules.len(),
                refused: None,
            };
            assignments.set_rules(rules);
            *last = snapshot;
            on_change();
            true
        }
        Err(errors) => {
            for error in &errors {
                tracing::error!(error = %error, "role rules refused; the last good set stays in force");
            }
            lock(status).refused = Some(errors.join("; "));
            // Remember the bad set, so it is reported once, not at every
            // unrelated event; a fix changes the snapshot again.
            *last = snapshot;
            false
        }
    }
}

fn lock(status: &SharedStatus) -> std::sync::MutexGuard<'_, RulesStatus> {
    status.lock().unwrap_or_else(|e| e.into_inner())
}
