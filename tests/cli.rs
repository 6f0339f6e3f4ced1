//! The command line: `check-config`, `dev`, exit codes and messages.

mod support;

use std::process::Command;

use support::{Agent, agent_bin, get};

fn check_config(text: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    Command::new(agent_bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap()
}

const VALID: &str = r#"
[server]
listen = ["127.0.0.1:8080"]
[credentials]
access_key_id = "ASIAEXAMPLE123456789"
secret_access_key = "secret"
session_token = "token"
[roles]
default = "app"
"#;

#[test]
fn check_config_accepts_a_valid_file() {
    let out = check_config(VALID);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(": OK (listen 127.0.0.1:8080; http_tokens optional"),
        "{stdout}"
    );
}

#[test]
fn check_config_names_file_key_and_problem() {
    let out = check_config(&format!("{VALID}\n[instance]\nregion = \"mars-1\"\n"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("config.toml:12: instance.region: \"mars-1\" is not a region"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret\""), "{stderr}");
}

#[test]
fn missing_config_file_is_exit_1() {
    let out = Command::new(agent_bin())
        .args(["check-config", "--config", "/nonexistent/imds-agent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/imds-agent.toml: cannot read the config file: No such file"),
        "{stderr}"
    );
    let run = Command::new(agent_bin())
        .args(["run", "--config", "/nonexistent/imds-agent.toml"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
}

#[test]
fn usage_errors_are_exit_2() {
    for args in [
        &["dev", "--hop-limit", "0"][..],
        &["dev", "--http-tokens", "sometimes"],
        &["bogus"],
        &["run", "--host-mode", "tunnel"],
    ] {
        let out = Command::new(agent_bin()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
    let out = Command::new(agent_bin())
        .args(["run", "--host-mode", "tunnel"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expected off, alias, dnat or ebpf"),
        "{out:?}"
    );
}

#[test]
fn port_in_use_is_exit_3() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(agent_bin())
        .args(["dev", "--port", &port])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("cannot listen on 127.0.0.1:{port}"))
    );
}

#[test]
fn dev_prints_the_export_line_and_serves_it() {
    let agent = Agent::dev(&["--http-tokens", "required", "--hop-limit", "2"]);
    assert!(agent.addr.ip().is_loopback());
    let banner = agent.banner();
    let socket_line = format!("export IMDS_AGENT_SOCKET={}", agent.socket.display());
    assert!(banner.contains(&socket_line), "{banner}");
    let status = Command::new(agent_bin())
        .arg("status")
        .env("IMDS_AGENT_SOCKET", &agent.socket)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(String::from_utf8_lossy(&status.stdout).contains("\"credentials_source\": \"static\""));
    assert_eq!(
        get(agent.addr, "/latest/meta-data/", &[]).status,
        401,
        "--http-tokens applies"
    );
}

#[test]
fn dev_with_credentials_from_the_environment() {
    let mut cmd = Command::new(agent_bin());
    cmd.args(["dev", "--port", "0", "--credentials-from-env"])
        .env("AWS_ACCESS_KEY_ID", "ASIAFROMENVIRONMENT1")
        .env("AWS_SECRET_ACCESS_KEY", "envsecret")
        .env("AWS_SESSION_TOKEN", "envtoken");
    let agent = Agent::start(cmd);
    let creds = get(
        agent.addr,
        "/latest/meta-data/iam/security-credentials/imds-agent-demo",
        &[],
    );
    let doc: serde_json::Value = serde_json::from_slice(&creds.body).unwrap();
    assert_eq!(doc["AccessKeyId"], "ASIAFROMENVIRONMENT1");
    assert_eq!(doc["Token"], "envtoken");
    let logs = agent.wait_for_log("credentials request");
    assert!(logs.contains("access_key_suffix=\"ENT1\""), "{logs}");
    assert!(
        !logs.contains("envsecret") && !logs.contains("envtoken"),
        "secrets in the log:\n{logs}"
    );

    let missing = Command::new(agent_bin())
        .args(["dev", "--port", "0", "--credentials-from-env"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("AWS_ACCESS_KEY_ID is not set"));
}

#[test]
fn dev_with_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev.toml");
    std::fs::write(
        &path,
        format!("{VALID}\n[instance]\ninstance_id = \"i-0aaaabbbbccccdddd\"\n"),
    )
    .unwrap();
    let agent = Agent::dev(&["--config", path.to_str().unwrap()]);
    assert_eq!(
        get(agent.addr, "/latest/meta-data/instance-id", &[]).text(),
        "i-0aaaabbbbccccdddd"
    );
    assert_eq!(
        get(
            agent.addr,
            "/latest/meta-data/iam/security-credentials/",
            &[]
        )
        .text(),
        "app"
    );
}

#[test]
fn the_sample_config_is_valid() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd/config.toml");
    let out = Command::new(agent_bin())
        .args(["check-config", "--config", sample])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A build without nftables refuses host modes, and says so.
    let without_nftables =
        cfg!(not(feature = "nftables")) && stderr.contains("built without nftables support");
    assert!(out.status.success() || without_nftables, "{stderr}");
}

#[test]
fn the_sample_rules_parse() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../systemd/roles.d/example.toml"
    );
    // Uncommented, the example's rules are all valid.
    let text: String = std::fs::read_to_string(example)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("# ") && !l.starts_with("# imds") && l.contains(['=', '[']))
        .map(|l| format!("{}\n", l.trim_start_matches("# ")))
        .collect();
    std::fs::create_dir(dir.path().join("roles.d")).unwrap();
    std::fs::write(dir.path().join("roles.d/example.toml"), &text).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[roles]\ndir = \"{}\"\n[credentials]\naccess_key_id = \"ASIAEXAMPLE123456789\"\nsecret_access_key = \"s\"\nsession_token = \"t\"\n",
            dir.path().join("roles.d").display()
        ),
    )
    .unwrap();
    let out = Command::new(agent_bin())
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("6 role rules"), "{stdout}");
}

#[test]
fn a_config_with_secrets_readable_by_others_is_flagged() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, VALID).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(agent_bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("holds secrets but other users can read it (mode 644)")
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(agent_bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dev_refuses_a_socket_directory_others_could_have_made() {
    use std::os::unix::fs::PermissionsExt as _;
    let runtime = tempfile::tempdir().unwrap();
    std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(agent_bin())
        .args(["dev", "--port", "0"])
        .env("XDG_RUNTIME_DIR", runtime.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a directory of your own with mode 0700")
            && stderr.contains("mode 755"),
        "{stderr}"
    );
    // A link to somewhere else is refused too, whatever it points at.
    let elsewhere = tempfile::tempdir().unwrap();
    let link = runtime.path().join("link");
    std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();
    let out = Command::new(agent_bin())
        .args(["dev", "--port", "0"])
        .env("XDG_RUNTIME_DIR", &link)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a symbolic link"),
        "{out:?}"
    );
}

#[test]
fn fixed_keys_with_rules_are_flagged() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("roles.d")).unwrap();
    std::fs::write(
        dir.path().join("roles.d/10.toml"),
        "[[rule]]\nuid = 1000\nrole = \"dev\"\n",
    )
    .unwrap();
    let out = check_config(&format!(
        "{VALID}dir = \"{}\"\n",
        dir.path().join("roles.d").display()
    ));
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("serves the same keys under every role name"),
        "{stderr}"
    );
    let plain = check_config(VALID);
    assert!(
        !String::from_utf8_lossy(&plain.stderr).contains("same keys"),
        "{plain:?}"
    );
}

/// A Roles Anywhere config (its files need not exist) with `credentials`
/// and `roles` added to those tables, and rules in `rules`.
fn roles_anywhere_config(credentials: &str, rules: &std::path::Path, roles: &str) -> String {
    format!(
        "[credentials]\nsource = \"sts\"\nbase = \"roles-anywhere\"\n{credentials}\
         [credentials.roles_anywhere]\ncertificate = \"/etc/pki/host.pem\"\nprivate_key = \"/etc/pki/host.key\"\n\
         trust_anchor_arn = \"arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/a\"\n\
         profile_arn = \"arn:aws:rolesanywhere:eu-west-1:123456789012:profile/p\"\n\
         role_arn = \"arn:aws:iam::123456789012:role/host\"\n\
         [roles]\ndir = \"{}\"\n{roles}",
        rules.display()
    )
}

/// With Roles Anywhere every role is assumed with a role session: a rule
/// asking for more than an hour is refused by check-config, saying why.
#[test]
fn check_config_refuses_chained_sessions_over_an_hour() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("roles.d");
    std::fs::create_dir(&rules).unwrap();
    let config = roles_anywhere_config("", &rules, "");
    std::fs::write(
        rules.join("long.toml"),
        "[[rule]]\nunit = \"web.service\"\nrole = \"web\"\nduration_seconds = 3600\n\
         [[rule]]\nunit = \"batch.service\"\nrole = \"batch\"\nduration_seconds = 7200\n",
    )
    .unwrap();
    let out = check_config(&config);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("long.toml:") && stderr.contains("chained session at one hour"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("duration_seconds over 3600").count(),
        1,
        "{stderr}"
    );
    // The certificate and key are read as the agent would read them.
    assert!(
        stderr.contains("credentials.roles_anywhere: reading /etc/pki/host.pem"),
        "{stderr}"
    );
    // `run` refuses to start with them, saying the same.
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &config).unwrap();
    let out = Command::new(agent_bin())
        .args(["dev", "--port", "0", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("chained session at one hour"), "{stderr}");
}

/// `mode = "direct"` serves the host's one role to every workload that has
/// any: a default or a rule naming another role is refused, saying why.
#[test]
fn direct_mode_refuses_assignments_of_other_roles() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("roles.d");
    std::fs::create_dir(&rules).unwrap();
    let config = roles_anywhere_config("mode = \"direct\"\n", &rules, "default = \"readonly\"\n");
    std::fs::write(
        rules.join("a.toml"),
        "[[rule]]\nunit = \"web.service\"\nrole = \"host\"\n\
         [[rule]]\nunit = \"batch.service\"\nrole = \"admin\"\n",
    )
    .unwrap();
    let out = check_config(&config);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("roles.default: names readonly")
            && stderr.contains("a.toml:4: names admin")
            && !stderr.contains("names host"),
        "{stderr}"
    );
}
