//! `imds-agent check-config` (is this config valid, and what does it say)
//! and `imds-agent is-configured` (does this file say anything at all: the
//! unit's start condition).

use std::path::Path;
use std::process::ExitCode;

use crate::config::{self, Config};

/// Exit 0 if the file at `path` holds a setting; 1 if it holds none (only
/// comments, as the package installs its sample) or does not exist. The
/// unit's `ExecCondition=`: systemd skips the service on an unconfigured
/// host instead of starting an agent that takes over 169.254.169.254 with
/// placeholder settings, or failing it at every boot. A file that is not
/// valid TOML holds something: 0, and `run` reports what is wrong with it.
/// Exit 255 (which fails the unit) if the file can't be read.
pub(super) fn is_configured(path: &Path) -> ExitCode {
    let not_configured = |why: &str| {
        eprintln!(
            "imds-agent: {} {why}: the agent is not configured and does not start. Write its settings (the README's configuration reference), check them with `imds-agent check-config --config {0}`, then start it.",
            path.display()
        );
        ExitCode::from(1)
    };
    match std::fs::read_to_string(path) {
        Ok(text) if config::holds_settings(&text) => ExitCode::SUCCESS,
        Ok(_) => not_configured("holds no settings (every line is a comment)"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => not_configured("does not exist"),
        Err(e) => {
            eprintln!("imds-agent: reading {}: {e}", path.display());
            ExitCode::from(255)
        }
    }
}

pub(super) fn check_config(c: &Config) -> ExitCode {
    if let Some(warning) = c.permission_warning() {
        eprintln!("imds-agent: warning: {warning}");
    }
    let rules = match crate::assign::files::load(&c.roles.dir) {
        Ok(rules) => rules,
        Err(errors) => {
            for e in &errors {
                eprintln!("imds-agent: {e}");
            }
            return ExitCode::from(1);
        }
    };
    let policy = crate::app::policy(c);
    let mut problems = crate::app::assignment_problems(c, &policy, &rules);
    if let config::CredentialsConfig::Sts(sts) = &c.credentials
        && let config::StsBase::RolesAnywhere(settings) = &sts.base
    {
        // The files as the agent will read them (nothing is sent).
        match crate::creds::roles_anywhere::provider::RolesAnywhere::open((**settings).clone()) {
            Ok((_, warnings)) => {
                for w in warnings {
                    eprintln!("imds-agent: warning: {w}");
                }
            }
            Err(e) => problems.push(format!("credentials.roles_anywhere: {e}")),
        }
    }
    if !problems.is_empty() {
        for e in &problems {
            eprintln!("imds-agent: {e}");
        }
        return ExitCode::from(1);
    }
    if let Some(warning) = c.shared_keys_warning(rules.len()) {
        eprintln!("imds-agent: warning: {warning}");
    }
    if let Some(warning) = c.short_sessions_warning() {
        eprintln!("imds-agent: warning: {warning}");
    }
    println!(
        "{}: OK ({}; {} role rules in {})",
        c.origin,
        summary(c),
        rules.len(),
        c.roles.dir.display()
    );
    ExitCode::SUCCESS
}

fn summary(c: &Config) -> String {
    let listen: Vec<String> = c.listen.iter().map(ToString::to_string).collect();
    let role = c
        .roles
        .default
        .as_ref()
        .map_or("none".to_owned(), |r| r.spec.to_string());
    format!(
        "listen {}; http_tokens {}; hop_limit {}; instance {} in {}; default role {role}",
        listen.join(", "),
        c.settings.http_tokens.as_str(),
        c.settings.hop_limit,
        c.instance.instance_id,
        c.instance.availability_zone,
    )
}
