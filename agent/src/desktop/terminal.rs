//! `dev` in a terminal: when the agent starts asking for an MFA code, a
//! line says so and the code is read from the terminal. Only while `dev`
//! is the terminal's foreground job: a background process that reads its
//! terminal is stopped (SIGTTIN), and the agent with it.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use crate::creds::engine::{CodeOutcome, Engine};
use crate::creds::mfa::MfaCode;

/// Starts the prompt on a thread of its own (reading a terminal blocks),
/// when stdin is a terminal.
pub(super) fn start(engine: Engine) {
    if !std::io::stdin().is_terminal() {
        return;
    }
    let runtime = tokio::runtime::Handle::current();
    let spawned = std::thread::Builder::new()
        .name("imds-mfa-prompt".into())
        .spawn(move || prompt_loop(&engine, &runtime));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no terminal prompt for MFA codes");
    }
}

/// Whether this process is the terminal's foreground job.
fn in_foreground() -> bool {
    let stdin = std::io::stdin();
    match nix::unistd::tcgetpgrp(&stdin) {
        Ok(group) => group == nix::unistd::getpgrp(),
        Err(_) => false,
    }
}

fn prompt_loop(engine: &Engine, runtime: &tokio::runtime::Handle) {
    let mut prompt = engine.watch_mfa_prompt();
    let mut told = 0u64;
    loop {
        let now = prompt.borrow_and_update().clone();
        if now.round > told && (now.needed || now.waiting) && in_foreground() {
            told = now.round;
            let device = now.serial.as_deref().unwrap_or("your MFA device");
            let role = now
                .role
                .as_deref()
                .map(|r| format!(" for role {r}"))
                .unwrap_or_default();
            eprint!(
                "\nimds-agent: an MFA code is needed ({device}){role}; type it and press Enter: "
            );
            let _ = std::io::stderr().flush();
            match read_code(engine) {
                Some(Ok(code)) => tell(engine, runtime, code),
                Some(Err(why)) => eprintln!("imds-agent: {why}"),
                None => {}
            }
        }
        if runtime.block_on(prompt.changed()).is_err() {
            return;
        }
    }
}

/// A line from the terminal, read only once one is there and `dev` is in
/// the foreground (a background read would stop the agent), and only
/// while a code is still needed: `None` once it is not (it came from the
/// page, say) or stdin is gone.
fn read_code(engine: &Engine) -> Option<Result<MfaCode, String>> {
    use std::os::fd::AsFd as _;
    loop {
        let prompt = engine.mfa_prompt();
        if !(prompt.needed || prompt.waiting) {
            eprintln!("(the code is no longer needed)");
            return None;
        }
        let stdin = std::io::stdin();
        let mut fds = [nix::poll::PollFd::new(
            stdin.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let polled = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(500u16));
        let hung_up = fds[0].revents().is_some_and(|r| {
            r.intersects(
                nix::poll::PollFlags::POLLHUP
                    | nix::poll::PollFlags::POLLERR
                    | nix::poll::PollFlags::POLLNVAL,
            ) && !r.contains(nix::poll::PollFlags::POLLIN)
        });
        if hung_up {
            return None;
        }
        match polled {
            Ok(0) => continue,
            Ok(_) if in_foreground() => {}
            Ok(_) => {
                std::thread::sleep(std::time::Duration::from_millis(500));
                continue;
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        return Some(MfaCode::parse(line.trim()).map_err(|e| e.to_string()));
    }
}

/// How long the terminal waits to hear what became of a code.
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

fn tell(engine: &Engine, runtime: &tokio::runtime::Handle, code: MfaCode) {
    let outcome = match engine.submit_code(code) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("imds-agent: {e}");
            return;
        }
    };
    match runtime.block_on(tokio::time::timeout(ANSWER_WAIT, outcome)) {
        Ok(Ok(CodeOutcome::Opened { expiration, .. })) => eprintln!(
            "imds-agent: the MFA session is open until {}",
            crate::timefmt::iso8601(expiration)
        ),
        Ok(Ok(CodeOutcome::Refused(why))) => eprintln!("imds-agent: STS refused the code: {why}"),
        Ok(Ok(CodeOutcome::Failed(why))) => eprintln!("imds-agent: the code was not used: {why}"),
        Ok(Err(_)) => eprintln!("imds-agent: the code was not used"),
        Err(_) => eprintln!("imds-agent: no answer from STS yet (the agent's log says more)"),
    }
}
