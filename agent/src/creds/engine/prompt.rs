//! A person's MFA code. With an MFA device and no TOTP secret, the shared
//! session needs a code only a person has: a request that waits for it
//! opens a prompt (shown by notifiers, the `/manage` page and the admin
//! socket) and the fetch waits for a code, boundedly. Whoever hands a code
//! in is told what became of it: the session opened, STS refused the code,
//! or the call failed.

use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::{Notify, oneshot, watch};

use crate::creds::mfa::MfaCode;

const IDENTITY_CHANGED: &str = "the agent's identity changed before the code was used";

/// What became of a code a person handed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeOutcome {
    /// The session opened with it.
    Opened {
        /// When the session expires.
        expiration: SystemTime,
        /// The session's access key id suffix.
        access_key_suffix: String,
    },
    /// STS refused it (a wrong or reused code): type another.
    Refused(String),
    /// It could not be used (STS unreachable, the identity changed, a newer
    /// code replaced it).
    Failed(String),
}

/// What the person is asked, for whoever tells them (notifiers, the page).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MfaPrompt {
    /// A code is needed: the session is not open and a role needed it.
    pub needed: bool,
    /// A request is waiting for the code right now.
    pub waiting: bool,
    /// The MFA device.
    pub serial: Option<String>,
    /// The active profile.
    pub profile: Option<String>,
    /// The role whose request waits (or last needed the code): the person
    /// sees what they are typing the code for.
    pub role: Option<String>,
    /// Why the last code was refused.
    pub refused: Option<String>,
    /// Bumped whenever the person should be told anew: a code became
    /// needed, or a request started waiting for one.
    pub round: u64,
}

/// Where the outcome of a handed-in code goes.
#[derive(Debug, Default)]
pub(super) struct Reply(Option<oneshot::Sender<CodeOutcome>>);

impl Reply {
    pub(super) fn to(sender: oneshot::Sender<CodeOutcome>) -> Self {
        Self(Some(sender))
    }

    pub(super) fn send(&mut self, outcome: CodeOutcome) {
        if let Some(reply) = self.0.take() {
            let _ = reply.send(outcome);
        }
    }

    /// Whether a person is told the outcome (a code they typed).
    pub(super) fn is_a_persons(&self) -> bool {
        self.0.is_some()
    }
}

/// A code handed in and not yet used.
#[derive(Debug)]
pub(super) struct HandedCode {
    pub(super) code: MfaCode,
    /// The base generation it was handed in under: a code for one profile
    /// is never sent as another's.
    pub(super) generation: u64,
    pub(super) reply: Reply,
}

#[derive(Debug, Default)]
struct Slot {
    handed: Option<HandedCode>,
    /// A fetch waits for a code.
    waiting: bool,
    /// When the last wait ran out: fetches asked before that do not wait
    /// again (their requests have given up with it).
    ran_out_at: Option<tokio::time::Instant>,
    /// Waits under an older generation stop at once (the profile was
    /// switched, the session cleared): they hold the session's lock.
    current: u64,
}

/// The code slot and the prompt.
#[derive(Debug)]
pub(super) struct Prompter {
    slot: Mutex<Slot>,
    arrived: Notify,
    shown: watch::Sender<MfaPrompt>,
}

impl Default for Prompter {
    fn default() -> Self {
        Self {
            slot: Mutex::default(),
            arrived: Notify::new(),
            shown: watch::channel(MfaPrompt::default()).0,
        }
    }
}

impl Prompter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn watch(&self) -> watch::Receiver<MfaPrompt> {
        self.shown.subscribe()
    }

    pub(super) fn current(&self) -> MfaPrompt {
        self.shown.borrow().clone()
    }

    /// Takes a code: a waiting fetch uses it now. A code it replaces is
    /// answered.
    pub(super) fn hand(&self, mut code: HandedCode) {
        let replaced = {
            let mut slot = self.lock();
            if code.generation < slot.current {
                // The identity changed between reading it and now.
                drop(slot);
                code.reply
                    .send(CodeOutcome::Failed(IDENTITY_CHANGED.into()));
                return;
            }
            slot.handed.replace(code)
        };
        if let Some(mut old) = replaced {
            old.reply
                .send(CodeOutcome::Failed("a newer code replaced it".into()));
        }
        self.arrived.notify_one();
    }

    /// The code handed in under `generation`, if any. One for an older
    /// identity is answered and dropped; one for a newer identity stays for
    /// a fetch of that identity.
    pub(super) fn take(&self, generation: u64) -> Option<HandedCode> {
        let mut handed = self.lock().handed.take_if(|h| h.generation <= generation)?;
        if handed.generation == generation {
            return Some(handed);
        }
        handed
            .reply
            .send(CodeOutcome::Failed(IDENTITY_CHANGED.into()));
        None
    }

    /// Whether a code handed in under `generation` waits to be used.
    pub(super) fn has_code(&self, generation: u64) -> bool {
        self.lock()
            .handed
            .as_ref()
            .is_some_and(|h| h.generation == generation)
    }

    /// The identity changed to `generation` (profile switched, session
    /// cleared): a code handed in under an older one is answered and
    /// dropped, and a wait under one ends now.
    pub(super) fn discard(&self, generation: u64) {
        let old = {
            let mut slot = self.lock();
            slot.current = slot.current.max(generation);
            slot.handed.take_if(|h| h.generation < generation)
        };
        if let Some(mut handed) = old {
            handed
                .reply
                .send(CodeOutcome::Failed(IDENTITY_CHANGED.into()));
        }
        self.arrived.notify_one();
        self.shown.send_modify(|p| {
            p.needed = false;
            p.refused = None;
        });
    }

    /// Waits until `deadline` for a code handed in under `generation`, for
    /// a fetch asked at `asked`; `None` when none came (or a wait ran out
    /// since the fetch was asked).
    pub(super) async fn wait(
        &self,
        generation: u64,
        asked: tokio::time::Instant,
        deadline: tokio::time::Instant,
        asking: MfaPrompt,
    ) -> Option<HandedCode> {
        {
            let mut slot = self.lock();
            // A wait ran out since this fetch was asked, or its identity
            // is gone: nothing is shown, nobody waits.
            if slot.ran_out_at.is_some_and(|at| at > asked) || slot.current > generation {
                return None;
            }
            slot.waiting = true;
        }
        self.shown.send_modify(|p| {
            p.round += 1;
            *p = MfaPrompt {
                needed: true,
                waiting: true,
                round: p.round,
                refused: p.refused.take(),
                ..asking
            };
        });
        let got = loop {
            let timed_out = tokio::time::Instant::now() >= deadline;
            {
                let mut slot = self.lock();
                if slot.current > generation {
                    slot.waiting = false;
                    break None;
                }
                if let Some(handed) = slot.handed.take_if(|h| h.generation <= generation) {
                    slot.waiting = false;
                    break Some(handed);
                }
                if timed_out {
                    slot.waiting = false;
                    slot.ran_out_at = Some(tokio::time::Instant::now());
                    break None;
                }
            }
            let _ = tokio::time::timeout_at(deadline, self.arrived.notified()).await;
        };
        self.shown.send_modify(|p| p.waiting = false);
        match got {
            Some(mut handed) if handed.generation != generation => {
                handed
                    .reply
                    .send(CodeOutcome::Failed(IDENTITY_CHANGED.into()));
                None
            }
            other => other,
        }
    }

    /// A fetch found no code and could not wait: the person should know.
    pub(super) fn needed(&self, asking: MfaPrompt) {
        self.shown.send_if_modified(|p| {
            if p.needed {
                return false;
            }
            p.round += 1;
            *p = MfaPrompt {
                needed: true,
                round: p.round,
                refused: p.refused.take(),
                ..asking
            };
            true
        });
    }

    /// STS refused the code the person typed.
    pub(super) fn refused(&self, why: &str) {
        self.shown.send_modify(|p| p.refused = Some(why.to_owned()));
    }

    /// The session opened: nothing is asked any more.
    pub(super) fn opened(&self) {
        self.shown.send_if_modified(|p| {
            let changed = p.needed || p.refused.is_some();
            p.needed = false;
            p.refused = None;
            changed
        });
    }
}
