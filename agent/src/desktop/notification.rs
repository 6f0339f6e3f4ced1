//! A freedesktop notification (`org.freedesktop.Notifications.Notify`) on
//! the session bus whenever the agent starts asking for an MFA code, with
//! an action that opens the `/manage` page.

use std::collections::HashMap;

use futures_util::StreamExt as _;
use zbus::zvariant::Value;

use super::PageOpener;
use crate::creds::engine::{Engine, MfaPrompt};

const SERVICE: &str = "org.freedesktop.Notifications";
const PATH: &str = "/org/freedesktop/Notifications";

/// Follows the engine's prompt and notifies at each new round; opens the
/// page when the notification's action is taken. Gives up, once logged,
/// when there is no session bus or no notification service.
pub(super) async fn run(engine: Engine, page: Option<PageOpener>) {
    let connection = match zbus::Connection::session().await {
        Ok(connection) => connection,
        Err(e) => {
            tracing::info!(error = %e, "no session bus: MFA prompts are not notified on the desktop");
            return;
        }
    };
    // The id of the agent's notification: only its action is followed.
    let ours = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    if let Some(page) = page.clone() {
        let connection = connection.clone();
        let ours = std::sync::Arc::clone(&ours);
        tokio::spawn(async move { follow_actions(connection, page, ours).await });
    }
    let mut prompt = engine.watch_mfa_prompt();
    let mut told = 0u64;
    let mut last_id = 0u32;
    loop {
        let now = prompt.borrow_and_update().clone();
        if now.round > told && (now.needed || now.waiting) {
            told = now.round;
            match notify(&connection, &now, last_id, page.is_some()).await {
                Ok(id) => {
                    last_id = id;
                    ours.store(id, std::sync::atomic::Ordering::SeqCst);
                }
                Err(e) => tracing::warn!(error = %e, "could not show the MFA notification"),
            }
        }
        if prompt.changed().await.is_err() {
            return;
        }
    }
}

async fn notify(
    connection: &zbus::Connection,
    prompt: &MfaPrompt,
    replaces: u32,
    with_page: bool,
) -> zbus::Result<u32> {
    let device = prompt.serial.as_deref().unwrap_or("your MFA device");
    let mut body = match (&prompt.profile, prompt.waiting) {
        (Some(profile), true) => {
            format!("A request waits for a code from {device} (profile {profile}).")
        }
        (None, true) => format!("A request waits for a code from {device}."),
        (Some(profile), false) => {
            format!("The session of profile {profile} needs a code from {device}.")
        }
        (None, false) => format!("The session needs a code from {device}."),
    };
    if let Some(role) = &prompt.role {
        body.push_str(&format!(" For role {role}."));
    }
    let actions: Vec<&str> = if with_page {
        vec!["default", "Enter the code"]
    } else {
        Vec::new()
    };
    let hints: HashMap<&str, Value<'_>> = HashMap::from([("urgency", Value::U8(2))]);
    let reply = connection
        .call_method(
            Some(SERVICE),
            PATH,
            Some(SERVICE),
            "Notify",
            &(
                "imds-agent",
                replaces,
                "dialog-password",
                "imds-agent: MFA code needed",
                body.as_str(),
                actions,
                hints,
                -1i32,
            ),
        )
        .await?;
    let id: u32 = reply.body().deserialize()?;
    tracing::info!(notification = id, "asked for an MFA code on the desktop");
    Ok(id)
}

/// Opens the page when the person clicks the agent's notification (`ours`:
/// its id; another application's notifications are none of its business).
async fn follow_actions(
    connection: zbus::Connection,
    page: PageOpener,
    ours: std::sync::Arc<std::sync::atomic::AtomicU32>,
) {
    let rule = match zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender(SERVICE)
        .and_then(|b| b.path(PATH))
        .and_then(|b| b.interface(SERVICE))
        .and_then(|b| b.member("ActionInvoked"))
    {
        Ok(builder) => builder.build(),
        Err(e) => {
            tracing::warn!(error = %e, "notification actions are not followed");
            return;
        }
    };
    let mut stream = match zbus::MessageStream::for_match_rule(rule, &connection, None).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(error = %e, "notification actions are not followed");
            return;
        }
    };
    while let Some(message) = stream.next().await {
        let Ok(message) = message else { continue };
        let Ok((id, action)) = message.body().deserialize::<(u32, String)>() else {
            continue;
        };
        let mine = id != 0 && id == ours.load(std::sync::atomic::Ordering::SeqCst);
        if mine
            && action == "default"
            && let Err(e) = page.open().await
        {
            tracing::warn!(error = %e, "could not open the /manage page");
        }
    }
}
