//! Config parsing and checking, from TOML strings.

use std::time::{Duration, UNIX_EPOCH};

use super::*;

fn host() -> HostFacts {
    HostFacts {
        machine_id: "0123456789abcdef0123456789abcdef".to_owned(),
        boot_time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        architecture: "x86_64".to_owned(),
        hostname: "build-7".to_owned(),
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

const KEYS: &str = r#"
[credentials]
access_key_id = "ASIAEXAMPLE123456789"
secret_access_key = "secret"
session_token = "token"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    let origin = Origin::File("/etc/imds-agent/config.toml".into());
    Config::parse(text, origin, &Overrides::default(), &host(), &no_env)
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn minimal_file_gets_plausible_defaults() {
    let c = parse(KEYS).unwrap();
    assert_eq!(c.listen, vec!["169.254.169.254:80".parse().unwrap()]);
    assert_eq!(c.settings.http_tokens, HttpTokens::Optional);
    assert_eq!(c.settings.hop_limit, 1);
    let i = &c.instance;
    assert_eq!(i.region, "us-east-1");
    assert_eq!(i.availability_zone, "us-east-1a");
    assert_eq!(i.availability_zone_id, "use1-az1");
    assert_eq!(i.partition, "aws");
    assert!(i.instance_id.starts_with("i-") && i.instance_id.len() == 19);
    assert!(i.local_hostname.ends_with(".ec2.internal"));
    assert_eq!(i.hostname, i.local_hostname);
    assert_eq!(i.pending_time, host().boot_time);
    assert_eq!(i.account_id.len(), 12);
    assert_eq!(
        i.tags,
        Some(vec![("Name".to_owned(), "build-7".to_owned())])
    );
    assert!(i.public_keys.is_empty());
    assert!(c.roles.default.is_none());
    // Stable: the same host gives the same values.
    let again = parse(KEYS).unwrap();
    assert_eq!(again.instance, c.instance);
}

#[test]
fn everything_can_be_set() {
    let text = format!(
        r##"{KEYS}
[server]
listen = ["127.0.0.1:8080", "[::1]:8080"]
http_tokens = "required"
hop_limit = 2
[instance]
account_id = "210987654321"
region = "cn-north-1"
availability_zone = "cn-north-1b"
instance_id = "i-0123456789abcdef0"
ami_id = "ami-12345678"
instance_type = "c7g.xlarge"
local_ipv4 = "172.31.5.6"
public_ipv4 = "3.4.5.6"
mac = "0a:00:00:00:00:01"
tags = {{ Name = "web", "aws:team" = "blue" }}
public_keys = {{ laptop = "ssh-ed25519 AAAA me" }}
user_data = "#!/bin/sh"
[roles]
default = "app"
"##
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.listen.len(), 2);
    assert_eq!(c.settings.http_tokens, HttpTokens::Required);
    assert_eq!(c.settings.hop_limit, 2);
    let i = &c.instance;
    assert_eq!(i.partition, "aws-cn");
    assert_eq!(i.domain, "amazonaws.com.cn");
    assert_eq!(
        i.local_hostname,
        "ip-172-31-5-6.cn-north-1.compute.internal"
    );
    assert_eq!(i.tags.as_ref().unwrap()[0], ("Name".into(), "web".into()));
    assert_eq!(i.user_data.as_deref(), Some(&b"#!/bin/sh"[..]));
    let role = c.roles.default.unwrap();
    assert_eq!(
        role.spec
            .arn(c.configured_account.as_deref(), &c.instance.partition)
            .unwrap(),
        "arn:aws-cn:iam::210987654321:role/app"
    );
}

#[test]
fn errors_name_file_key_line_and_problem() {
    let cases = [
        (
            "[server]\nhop_limit = 0\n",
            "/etc/imds-agent/config.toml:2: server.hop_limit: must be from 1 to 64",
        ),
        (
            "[server]\nhop_limit = 65\n",
            "server.hop_limit: must be from 1 to 64",
        ),
        (
            "[server]\nhttp_tokens = \"sometimes\"\n",
            "/etc/imds-agent/config.toml:2: server.http_tokens: unknown variant `sometimes`, expected `optional` or `required`",
        ),
        (
            "[server]\nlisten = [\"localhost\"]\n",
            "server.listen: \"localhost\" is not an address with a port",
        ),
        (
            "[server]\nlisten = []\n",
            "server.listen: needs at least one address",
        ),
        ("[server]\nhop_limt = 2\n", "unknown field `hop_limt`"),
        (
            "[server]\nhost_names = [\"bad name\"]\n",
            "server.host_names: \"bad name\" is not a DNS name",
        ),
        (
            "[server]\nworker_threads = 0\n",
            "server.worker_threads: must be from 1 to 64",
        ),
        (
            "[server]\nmax_connections = 0\n",
            "server.max_connections: must be from 1 to 65536",
        ),
        (
            "[server]\nhop_limit = -1\n",
            "server.hop_limit: invalid value: integer `-1`",
        ),
        ("[sever]\n", "unknown field `sever`"),
        ("[server\n", "/etc/imds-agent/config.toml:1: (document):"),
        (
            "[instance]\nregion = \"Europe\"\n",
            "instance.region: \"Europe\" is not a region",
        ),
        (
            "[instance]\nregion = \"eu-west-1\"\navailability_zone = \"us-east-1a\"\n",
            "instance.availability_zone: \"us-east-1a\" is not a zone of region \"eu-west-1\"",
        ),
        (
            "[instance]\ninstance_id = \"i-xyz\"\n",
            "/etc/imds-agent/config.toml:2: instance.instance_id: \"i-xyz\" is not an instance id",
        ),
        (
            "[instance]\naccount_id = \"1234\"\n",
            "instance.account_id: \"1234\" is not a 12-digit account id",
        ),
        (
            "[instance]\nlocal_ipv4 = \"10.0.0\"\n",
            "instance.local_ipv4: \"10.0.0\" is not an IPv4 address",
        ),
        ("[instance]\nmac = \"0E:00:00:00:00:01\"\n", "instance.mac"),
        (
            "[instance]\ntags = { \"a/b\" = \"x\" }\n",
            "instance.tags.a/b: a name must be one line",
        ),
        (
            "[instance]\ntags = { \"..\" = \"x\" }\n",
            "instance.tags...",
        ),
        (
            "[instance]\npublic_keys = { \"a=b\" = \"k\" }\n",
            "instance.public_keys.a=b: a key name can't contain '='",
        ),
        (
            "[instance]\nuser_data = \"x\"\nuser_data_file = \"/x\"\n",
            "set user_data or user_data_file, not both",
        ),
        (
            "[instance]\nuser_data_file = \"/nonexistent/imds-agent-user-data\"\n",
            "instance.user_data_file: cannot read /nonexistent/imds-agent-user-data",
        ),
        (
            "[roles]\ndefault = \"bad role name\"\n",
            "/etc/imds-agent/config.toml:2: roles.default: \"bad role name\" is not a valid role name",
        ),
        (
            "[roles]\ndefault = \"arn:aws:iam::1:role/x\"\n",
            "roles.default: \"arn:aws:iam::1:role/x\" is not an IAM role ARN",
        ),
        (
            "[log]\nlevel = \"imds_agent=loud\"\n",
            "log.level: \"imds_agent=loud\" is not a log filter",
        ),
        (
            "[credentials]\nsource = \"vault\"\n",
            "credentials.source: unknown variant `vault`",
        ),
        (
            "[credentials]\nlifetime_seconds = 1799\n",
            "credentials.lifetime_seconds: must be from 1800 (30 minutes) to 43200",
        ),
    ];
    for (body, want) in cases {
        let text = if body.contains("[credentials]") {
            body.to_owned()
        } else {
            format!("{body}{KEYS}")
        };
        let got = error(&text);
        assert!(
            got.contains(want),
            "for {body:?}\n got: {got}\nwant: {want}"
        );
        assert!(got.starts_with("/etc/imds-agent/config.toml"), "{got}");
    }
}

#[test]
fn credentials_are_checked_without_leaking_them() {
    let missing_token = "[credentials]\naccess_key_id = \"ASIAEXAMPLE123456789\"\nsecret_access_key = \"hunter2hunter2\"\n";
    let got = error(missing_token);
    assert!(got.contains("credentials.session_token: credentials.session_token is not set: IMDS credentials always carry a session token"), "{got}");
    let bad_id = "[credentials]\naccess_key_id = \"short\"\nsecret_access_key = \"hunter2hunter2\"\nsession_token = \"t\"\n";
    let got = error(bad_id);
    assert!(
        got.contains(
            "credentials.access_key_id: credentials.access_key_id is not an access key id"
        ),
        "{got}"
    );
    assert!(!got.contains("hunter2"), "{got}");
    let nothing = error("");
    assert!(
        nothing.contains("credentials.access_key_id is not set"),
        "{nothing}"
    );
}

#[test]
fn credentials_from_the_environment() {
    let env = |name: &str| match name {
        "AWS_ACCESS_KEY_ID" => Some("ASIAENVIRONMENT00001".to_owned()),
        "AWS_SECRET_ACCESS_KEY" => Some("envsecret".to_owned()),
        "AWS_SESSION_TOKEN" => Some("envtoken".to_owned()),
        _ => None,
    };
    let text = "[credentials]\nfrom_env = true\n";
    let origin = Origin::File("c.toml".into());
    let c = Config::parse(text, origin.clone(), &Overrides::default(), &host(), &env).unwrap();
    let CredentialsConfig::Static { keys, .. } = c.credentials else {
        panic!("static credentials expected");
    };
    assert_eq!(keys.access_key_id, "ASIAENVIRONMENT00001");
    assert_eq!(keys.session_token.expose(), "envtoken");

    let err = Config::parse(
        text,
        origin.clone(),
        &Overrides::default(),
        &host(),
        &no_env,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("credentials.from_env: AWS_ACCESS_KEY_ID is not set"),
        "{err}"
    );
    let both = "[credentials]\nfrom_env = true\naccess_key_id = \"ASIAEXAMPLE123456789\"\n";
    let err = Config::parse(both, origin, &Overrides::default(), &host(), &env).unwrap_err();
    assert!(
        err.to_string()
            .contains("credentials.access_key_id: from_env = true"),
        "{err}"
    );
}

#[test]
fn the_manage_page_is_served_on_loopback_only_when_asked() {
    let c = parse(&format!("[admin]\nweb_listen = \"[::1]:8930\"\n{KEYS}")).unwrap();
    assert_eq!(c.web_listen, Some("[::1]:8930".parse().unwrap()));
    assert!(!c.desktop, "a file never turns the desktop prompt on");
    assert_eq!(parse(KEYS).unwrap().web_listen, None);
}

#[test]
fn overrides_win() {
    let overrides = Overrides {
        listen: Some(vec!["127.0.0.1:9999".parse().unwrap()]),
        http_tokens: Some(HttpTokens::Required),
        hop_limit: Some(7),
        log_level: Some("debug".to_owned()),
        credentials_from_env: false,
        admin_socket: None,
        host_mode: Some(HostMode::Off),
    };
    let text = format!(
        "[host]\nmode = \"dnat\"\n[server]\nhop_limit = 2\nhttp_tokens = \"optional\"\n{KEYS}"
    );
    let c = Config::parse(&text, Origin::Embedded, &overrides, &host(), &no_env).unwrap();
    assert_eq!(c.listen, vec!["127.0.0.1:9999".parse().unwrap()]);
    assert_eq!(c.settings.http_tokens, HttpTokens::Required);
    assert_eq!(c.settings.hop_limit, 7);
    assert_eq!(c.log_level, "debug");
}

#[test]
fn user_data_file_is_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ud.sh"), b"\x00\x01binary").unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[instance]\nuser_data_file = \"ud.sh\"\n{KEYS}"),
    )
    .unwrap();
    let c = Config::load(&config, &Overrides::default(), &host(), &no_env).unwrap();
    assert_eq!(
        c.instance.user_data.as_deref(),
        Some(&b"\x00\x01binary"[..])
    );
    std::fs::write(dir.path().join("ud.sh"), vec![b'x'; 16 * 1024 + 1]).unwrap();
    let err = Config::load(&config, &Overrides::default(), &host(), &no_env).unwrap_err();
    assert!(
        err.to_string().contains("EC2 allows at most 16384"),
        "{err}"
    );
}

#[test]
fn user_data_file_must_be_a_regular_file() {
    // A FIFO would block at open with no writer; /dev/zero never ends.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for path in [
        fifo.as_path(),
        std::path::Path::new("/dev/zero"),
        dir.path(),
    ] {
        let text = format!(
            "[instance]\nuser_data_file = {:?}\n{KEYS}",
            path.to_str().unwrap()
        );
        // On a thread of its own: a hang fails the test instead of
        // hanging it.
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(parse(&text).map(|_| ()).map_err(|e| e.with_causes()));
        });
        let err = result
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("reading {} hangs", path.display()))
            .unwrap_err();
        assert!(
            err.contains("instance.user_data_file") && err.contains("not a regular file"),
            "{err}"
        );
    }
}

#[test]
fn missing_file_is_a_clear_error() {
    let err = Config::load(
        "/nonexistent/imds.toml".as_ref(),
        &Overrides::default(),
        &host(),
        &no_env,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert_eq!(msg, "/nonexistent/imds.toml: cannot read the config file");
}

#[test]
fn the_built_in_dev_config_is_valid() {
    let c = Config::parse(
        DEV_CONFIG,
        Origin::Embedded,
        &Overrides::default(),
        &host(),
        &no_env,
    )
    .unwrap();
    assert!(c.listen.iter().all(|a| a.ip().is_loopback()));
    assert_eq!(c.roles.default.unwrap().name, "imds-agent-demo");
}

fn sts(text: &str) -> StsConfig {
    match parse(text).unwrap_or_else(|e| panic!("{e}")).credentials {
        CredentialsConfig::Sts(sts) => *sts,
        other => panic!("expected STS, got {other:?}"),
    }
}

#[test]
fn sts_with_the_standard_chain_by_default() {
    let s = sts("[instance]\nregion = \"eu-central-1\"\n[credentials]\nsource = \"sts\"\n");
    assert!(matches!(
        s.base,
        StsBase::Chain {
            instance_profile: false
        }
    ));
    assert_eq!(
        s.identity.region, "eu-central-1",
        "STS in the instance's region"
    );
    assert_eq!(s.identity.mode, crate::creds::engine::Mode::AssumeRole);
    assert_eq!(s.identity.duration, Duration::from_secs(3600));
    assert_eq!(s.keep, Duration::from_secs(1800));
    // Half botocore's and JS v3's one-second IMDS timeouts: room for a
    // busy host around the wait, and SDKs wait twice (the role listing,
    // then the credentials).
    assert_eq!(s.first_fetch_wait, Duration::from_millis(500));
    assert_eq!(s.idle_ttl, Duration::from_secs(600));
    // A hundred new workloads at once are served from the burst.
    assert_eq!(s.burst, 100);
    assert!(s.identity.mfa.is_none());
}

/// The 15-minute promise: a refresh margin under 15 minutes is refused,
/// sessions under 30 minutes (which can't keep 15 minutes: credentials are
/// replaced at half their life at the latest) are warned about.
#[test]
fn configs_that_break_the_fifteen_minute_promise() {
    let refused = error("[credentials]\nsource = \"sts\"\nrefresh_before_expiry_seconds = 300\n");
    assert!(
        refused.contains("credentials.refresh_before_expiry_seconds: must be from 900 to 3600"),
        "{refused}"
    );
    let config = |text: &str| parse(text).unwrap_or_else(|e| panic!("{e}"));
    let short = config("[credentials]\nsource = \"sts\"\nduration_seconds = 900\n");
    let warning = short.short_sessions_warning().expect("a warning");
    assert!(
        warning.contains("credentials.duration_seconds = 900"),
        "{warning}"
    );
    assert!(warning.contains("15 minutes"), "{warning}");
    let profile = config(
        "[credentials]\nsource = \"sts\"\nbase = \"profiles\"\n\
         [profiles.a]\naccess_key_id = \"AKIAEXAMPLE123456789\"\nsecret_access_key = \"s\"\nduration_seconds = 1200\n",
    );
    assert!(
        profile
            .short_sessions_warning()
            .is_some_and(|w| w.contains("profiles.a.duration_seconds = 1200"))
    );
    for fine in [
        "[credentials]\nsource = \"sts\"\nduration_seconds = 1800\nrefresh_before_expiry_seconds = 900\n",
        "[credentials]\nsource = \"sts\"\n",
        KEYS,
    ] {
        assert!(config(fine).short_sessions_warning().is_none(), "{fine:?}");
    }
}

#[test]
fn sts_settings() {
    let s = sts(r#"
[credentials]
source = "sts"
base = "bootstrap"
mode = "session-token"
region = "us-west-2"
endpoint = "http://127.0.0.1:5000"
duration_seconds = 129600
external_id = "ext-123"
mfa_serial = "arn:aws:iam::123456789012:mfa/me"
mfa_secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
rate_per_second = 2.5
burst = 5
source_identity = true
session_tags = true
"#);
    assert!(matches!(s.base, StsBase::Bootstrap));
    assert_eq!(s.identity.mode, crate::creds::engine::Mode::SessionToken);
    assert_eq!(s.identity.duration, Duration::from_secs(129_600));
    assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
    assert_eq!(s.identity.external_id.as_deref(), Some("ext-123"));
    let mfa = s.identity.mfa.unwrap();
    assert_eq!(mfa.serial, "arn:aws:iam::123456789012:mfa/me");
    assert!(mfa.secret.is_some());
    assert!(s.source_identity && s.session_tags);
    assert_eq!(s.burst, 5);
}

#[test]
fn profiles_inherit_and_override() {
    let s = sts(r#"
[credentials]
source = "sts"
base = "profiles"
profile = "work"
region = "eu-west-1"
duration_seconds = 7200
[profiles.work]
access_key_id = "AKIAWORKWORKWORK0001"
secret_access_key = "w"
role = "arn:aws:iam::111111111111:role/dev"
mfa_serial = "arn:aws:iam::111111111111:mfa/me"
[profiles.play]
access_key_id = "AKIAPLAYPLAYPLAY0001"
secret_access_key = "p"
region = "ap-southeast-2"
mode = "session-token"
"#);
    let StsBase::Profiles { profiles, active } = s.base else {
        panic!("profiles expected")
    };
    assert_eq!(active, "work");
    let work = &profiles["work"];
    assert_eq!(work.identity.region, "eu-west-1");
    assert_eq!(work.identity.duration, Duration::from_secs(7200));
    assert_eq!(work.role.as_ref().unwrap().name, "dev");
    assert!(
        work.identity.mfa.as_ref().unwrap().secret.is_none(),
        "codes come from a person"
    );
    let play = &profiles["play"];
    assert_eq!(play.identity.region, "ap-southeast-2");
    assert_eq!(play.identity.mode, crate::creds::engine::Mode::SessionToken);
    assert_eq!(
        play.identity.duration,
        Duration::from_secs(43_200),
        "session-token's own default"
    );
    assert!(play.role.is_none());
}

#[test]
fn sts_errors() {
    let cases = [
        (
            "source = \"sts\"\naccess_key_id = \"AKIAEXAMPLE123456789\"\n",
            "credentials.access_key_id: with source = \"sts\" the agent's own keys come from",
        ),
        (
            "source = \"sts\"\nfrom_env = true\n",
            "credentials.from_env: with source = \"sts\"",
        ),
        (
            "base = \"chain\"\n",
            "credentials.base: is only read with source = \"sts\"",
        ),
        (
            "source = \"sts\"\nbase = \"vault\"\n",
            "credentials.base: unknown variant `vault`",
        ),
        (
            "source = \"sts\"\nmode = \"federation\"\n",
            "credentials.mode: unknown variant `federation`",
        ),
        (
            "source = \"sts\"\nduration_seconds = 899\n",
            "credentials.duration_seconds: must be from 900 to 43200",
        ),
        (
            "source = \"sts\"\nduration_seconds = 43201\n",
            "credentials.duration_seconds: must be from 900 to 43200",
        ),
        (
            "source = \"sts\"\nregion = \"moon\"\n",
            "credentials.region: \"moon\" is not a region",
        ),
        (
            "source = \"sts\"\nendpoint = \"sts.local\"\n",
            "credentials.endpoint: \"sts.local\" is not an http:// or https:// URL",
        ),
        (
            "source = \"sts\"\nmfa_secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\"\n",
            "credentials.mfa_secret: needs mfa_serial",
        ),
        (
            "source = \"sts\"\nmfa_serial = \"arn:aws:iam::1:mfa/x\"\nmfa_secret = \"not base32!\"\n",
            "credentials.mfa_secret: the TOTP secret is not base32",
        ),
        (
            "source = \"sts\"\nmfa_serial = \"x\"\n",
            "credentials.mfa_serial: \"x\" is not an MFA device",
        ),
        (
            "source = \"sts\"\nexternal_id = \"a b\"\n",
            "credentials.external_id: must be 2 to 1224 characters",
        ),
        (
            "source = \"sts\"\nbase = \"profiles\"\n",
            "credentials.base: \"profiles\" needs at least one [profiles.NAME] table",
        ),
        (
            "source = \"sts\"\nbase = \"bootstrap\"\ninstance_profile = true\n",
            "credentials.instance_profile: is only read with base = \"chain\"",
        ),
        (
            "source = \"sts\"\nrate_per_second = 0\n",
            "credentials.rate_per_second: must be from 0.1 to 1000",
        ),
        (
            "source = \"sts\"\nfirst_fetch_wait_ms = 10000\n",
            "credentials.first_fetch_wait_ms: must be from 0 to 5000",
        ),
        (
            "source = \"sts\"\nidle_ttl_seconds = 1\n",
            "credentials.idle_ttl_seconds: must be from 5 to 86400",
        ),
        (
            "source = \"sts\"\nmfa_prompt_wait_seconds = 61\n",
            "credentials.mfa_prompt_wait_seconds: must be from 0 to 60",
        ),
        (
            "[server]\nlisten = [\"127.0.0.1:8930\"]\n[admin]\nweb_listen = \"127.0.0.1:8930\"\n",
            "admin.web_listen: must not be an address the IMDS is served on",
        ),
        (
            "[admin]\nweb_listen = \"0.0.0.0:8930\"\n",
            "admin.web_listen: must be a loopback address",
        ),
        (
            "[admin]\nweb_listen = \"169.254.169.254:80\"\n",
            "admin.web_listen: must be a loopback address",
        ),
        (
            "[admin]\nmetrics_listen = \"127.0.0.1:9464\"\nweb_listen = \"127.0.0.1:9464\"\n",
            "admin.web_listen: must not be the metrics address",
        ),
        (
            "[admin]\nweb_listen = \"localhost\"\n",
            "admin.web_listen: \"localhost\" is not an address and port",
        ),
        (
            "source = \"sts\"\nbase = \"profiles\"\nprofile = \"x\"\n[profiles.a]\naccess_key_id = \"AKIAEXAMPLE123456789\"\nsecret_access_key = \"s\"\n",
            "credentials.profile: no [profiles.x] table",
        ),
        (
            "source = \"sts\"\nbase = \"profiles\"\n[profiles.a]\naccess_key_id = \"AKIAEXAMPLE123456789\"\nsecret_access_key = \"s\"\n[profiles.b]\naccess_key_id = \"AKIAEXAMPLE123456789\"\nsecret_access_key = \"s\"\n",
            "credentials.profile: name the profile that is active at start",
        ),
        (
            "source = \"sts\"\nbase = \"profiles\"\n[profiles.a]\nsecret_access_key = \"s\"\n",
            "profiles.a.access_key_id: is not set",
        ),
        (
            "source = \"sts\"\nbase = \"profiles\"\n[profiles.a]\naccess_key_id = \"AKIAEXAMPLE123456789\"\nsecret_access_key = \"s\"\nrole = \"arn:aws:iam::12:role/x\"\n",
            "profiles.a.role: \"arn:aws:iam::12:role/x\" is not an IAM role ARN",
        ),
        (
            "source = \"sts\"\nbase = \"profiles\"\n[profiles.a]\naccess_key_id = \"AKIAEXAMPLE123456789\"\nsecret_access_key = \"s\"\nmode = \"session-token\"\nduration_seconds = 200000\n",
            "profiles.a.duration_seconds: must be from 900 to 129600",
        ),
        (
            "source = \"sts\"\n[profiles.a]\naccess_key_id = \"AKIAEXAMPLE123456789\"\n",
            "profiles.a: profiles are only read with credentials.base = \"profiles\"",
        ),
    ];
    for (body, want) in cases {
        let text = if body.starts_with("source") || body.starts_with("base") {
            format!("[credentials]\n{body}")
        } else {
            body.to_owned()
        };
        let got = error(&text);
        assert!(
            got.contains(want),
            "for {body:?}\n got: {got}\nwant: {want}"
        );
    }
}

#[cfg(feature = "nftables")]
#[test]
fn host_modes_and_their_defaults() {
    let alias = parse(&format!("[host]\nmode = \"alias\"\n{KEYS}")).unwrap();
    assert_eq!(alias.host.mode, HostMode::Alias);
    assert_eq!(alias.listen, vec!["169.254.169.254:80".parse().unwrap()]);
    assert!(alias.attribution.cgroups, "host modes attribute by cgroup");
    assert_eq!(
        alias.privileges.user.as_deref(),
        Some(DEFAULT_USER),
        "a root agent never serves as root"
    );
    assert!(alias.proxy.is_none());
    let v6 = parse(&format!("[host]\nmode = \"alias\"\nipv6 = true\n{KEYS}")).unwrap();
    assert_eq!(v6.listen.len(), 2);
    let dnat = parse(&format!(
        "[host]\nmode = \"dnat\"\n[privileges]\nuser = \"imds-agent\"\n{KEYS}"
    ))
    .unwrap();
    assert_eq!(dnat.listen, vec!["169.254.170.254:80".parse().unwrap()]);
    let proxy = dnat.proxy.expect("proxy mode is on in DNAT mode");
    assert_eq!(proxy.upstream, "169.254.169.254:80".parse().unwrap());
    let off = parse(KEYS).unwrap();
    assert_eq!(off.host.mode, HostMode::Off);
    assert!(!off.attribution.cgroups && off.privileges.user.is_none() && off.proxy.is_none());
}

#[cfg(feature = "nftables")]
#[test]
fn host_sections_are_checked() {
    let cases = [
        (
            "[host]\nmode = \"nat\"\n",
            "host.mode: unknown variant `nat`",
        ),
        (
            "[host]\ninterfaces = [\"br-*\", \"a*b\"]\n",
            "host.interfaces[1]: \"a*b\" is not an interface name",
        ),
        (
            "[host]\ntable = \"my-table\"\n",
            "host.table: must be 1 to 64 letters",
        ),
        (
            "[host]\ndnat_address = \"10.0.0.1\"\n",
            "host.dnat_address: must be a link-local address",
        ),
        (
            "[host]\nmode = \"dnat\"\n[privileges]\nuser = \"nobody\"\n",
            "privileges.user: DNAT mode needs a user of the agent's own",
        ),
        (
            "[host]\nmode = \"dnat\"\nipv6 = true\n[privileges]\nuser = \"x\"\n",
            "host.ipv6: the IPv6 endpoint is served in alias mode only",
        ),
        (
            "[attribution]\ndocker = true\ncgroups = false\n",
            "attribution.cgroups: docker = true needs cgroups = true",
        ),
        (
            "[attribution]\nenv_role_var = \"X\"\n",
            "attribution.env_role_var: is only read with docker = true",
        ),
        (
            "[attribution]\ncgroup_root = \"sys/fs/cgroup\"\ncgroups = true\n",
            "attribution.cgroup_root: must be an absolute path",
        ),
        (
            "[attribution]\ncgroup_root = \"/sys/fs/cgroup\"\n",
            "attribution.cgroup_root: is only read with cgroups = true",
        ),
        (
            "[privileges]\ngroup = \"x\"\n",
            "privileges.user: groups are only changed together with the user",
        ),
        (
            "[privileges]\nuser = \"a:b\"\n",
            "privileges.user: \"a:b\" is not a user name",
        ),
        (
            "[proxy]\nallow = [\"meta-data/instance-id\"]\n",
            "proxy.allow: is only read when the proxy is enabled",
        ),
        (
            "[host]\nmode = \"alias\"\n[proxy]\nenabled = true\n",
            "proxy.upstream: is the agent itself",
        ),
        (
            "[host]\nmode = \"dnat\"\n[privileges]\nuser = \"x\"\n[proxy]\nallow = [\"meta-data/iam/\"]\n",
            "proxy.allow: \"meta-data/iam/\" is never forwarded",
        ),
        (
            "[host]\nmode = \"dnat\"\n[privileges]\nuser = \"x\"\n[proxy]\nupstream = \"imds\"\n",
            "proxy.upstream: \"imds\" is not an address and port",
        ),
        (
            "[host]\nmode = \"dnat\"\n[privileges]\nuser = \"x\"\n[proxy]\ntimeout_ms = 5\n",
            "proxy.timeout_ms: must be from 100 to 30000",
        ),
        (
            "[roles]\ncontainer_default = \"x y\"\n",
            "roles.container_default: \"x y\" is not a valid role name",
        ),
    ];
    for (body, want) in cases {
        let got = error(&format!("{body}{KEYS}"));
        assert!(
            got.contains(want),
            "for {body:?}\n got: {got}\nwant: {want}"
        );
    }
}

#[cfg(not(feature = "nftables"))]
#[test]
fn host_modes_need_the_nftables_build() {
    let got = error(&format!("[host]\nmode = \"alias\"\n{KEYS}"));
    assert!(
        got.contains("host.mode: this imds-agent was built without nftables support"),
        "{got}"
    );
}

#[cfg(not(feature = "ebpf"))]
#[test]
fn ebpf_mode_needs_the_ebpf_build() {
    let got = error(&format!("[host]\nmode = \"ebpf\"\n{KEYS}"));
    assert!(
        got.contains("host.mode: this imds-agent was built without eBPF support; run `cargo xtask build-ebpf`"),
        "{got}"
    );
}

#[cfg(feature = "ebpf")]
#[test]
fn ebpf_mode_listens_on_loopback_and_the_bridge() {
    let c = parse(&format!("[host]\nmode = \"ebpf\"\n{KEYS}")).unwrap();
    assert_eq!(c.listen, vec!["127.0.0.1:8169".parse().unwrap()]);
    assert_eq!(c.host.ebpf.cgroup, "/");
    assert!(c.attribution.cgroups);
    assert_eq!(c.privileges.user.as_deref(), Some(DEFAULT_USER));
    let c = parse(&format!(
        "[host]\nmode = \"ebpf\"\nebpf_port = 9000\nebpf_bridge_address = \"172.17.0.1\"\nebpf_cgroup = \"/system.slice\"\n{KEYS}"
    ))
    .unwrap();
    assert_eq!(
        c.listen,
        vec![
            "127.0.0.1:9000".parse().unwrap(),
            "172.17.0.1:9000".parse().unwrap()
        ]
    );
    assert_eq!(c.host.ebpf.cgroup, "/system.slice");
    let cases = [
        (
            "ebpf_cgroup = \"system.slice\"",
            "host.ebpf_cgroup: \"system.slice\" must be a path below the cgroup2 mount",
        ),
        ("ebpf_cgroup = \"/a/../b\"", "host.ebpf_cgroup"),
        ("ebpf_port = 0", "host.ebpf_port: must be from 1 to 65535"),
        (
            "ebpf_bridge_address = \"127.0.0.1\"",
            "host.ebpf_bridge_address: \"127.0.0.1\" is not a host address",
        ),
        (
            "ipv6 = true",
            "host.ipv6: eBPF mode always redirects [fd00:ec2::254]:80 too",
        ),
        (
            "[attribution]\ncgroups = false",
            "attribution.cgroups: eBPF mode attaches to the cgroup2 tree",
        ),
        (
            "[server]\nlisten = [\"10.0.0.1:80\"]",
            "server.listen: eBPF mode redirects to a loopback IPv4 listener",
        ),
        (
            "ebpf_bridge_address = \"172.17.0.1\"\n[server]\nlisten = [\"127.0.0.1:8169\"]",
            "the agent must also listen on 172.17.0.1:8169",
        ),
    ];
    for (extra, want) in cases {
        let got = error(&format!("[host]\nmode = \"ebpf\"\n{extra}\n{KEYS}"));
        assert!(
            got.contains(want),
            "for {extra:?}\n got: {got}\nwant: {want}"
        );
    }
}

const RA: &str = "[credentials]\nsource = \"sts\"\nbase = \"roles-anywhere\"\n\
    [credentials.roles_anywhere]\ncertificate = \"/etc/pki/host.pem\"\nprivate_key = \"/etc/pki/host.key\"\n\
    trust_anchor_arn = \"arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/a\"\n\
    profile_arn = \"arn:aws:rolesanywhere:eu-west-1:123456789012:profile/p\"\n\
    role_arn = \"arn:aws:iam::123456789012:role/host\"\n";

#[test]
fn roles_anywhere_defaults_from_its_arns() {
    let config = parse(RA).unwrap();
    let CredentialsConfig::Sts(sts) = &config.credentials else {
        panic!("not sts")
    };
    let StsBase::RolesAnywhere(ra) = &sts.base else {
        panic!("not roles anywhere")
    };
    assert_eq!(ra.region, "eu-west-1");
    assert_eq!(ra.endpoint, "rolesanywhere.eu-west-1.amazonaws.com");
    assert_eq!(ra.session.duration.as_secs(), 3600);
    let endpoint = |extra: &str| {
        let config = parse(&format!("{RA}{extra}")).unwrap();
        let CredentialsConfig::Sts(sts) = &config.credentials else {
            panic!("not sts")
        };
        let StsBase::RolesAnywhere(ra) = &sts.base else {
            panic!("not roles anywhere")
        };
        ra.endpoint.clone()
    };
    assert_eq!(
        endpoint("fips = true\n"),
        "rolesanywhere-fips.eu-west-1.amazonaws.com"
    );
    assert_eq!(
        endpoint("dual_stack = true\n"),
        "rolesanywhere.eu-west-1.api.aws"
    );
    assert_eq!(
        endpoint("fips = true\ndual_stack = true\n"),
        "rolesanywhere-fips.eu-west-1.api.aws"
    );
    let e = error(&format!("{RA}fips = true\nendpoint = \"ra.example\"\n"));
    assert!(e.contains("credentials.roles_anywhere.endpoint"), "{e}");
    for bad in [
        "",
        "a/b",
        "user@ra.example",
        "ra.example?x",
        "ra.example#",
        "ra example",
        "ra.example:0",
        "ra.example:99999",
        "[::1",
    ] {
        let e = error(&format!("{RA}endpoint = \"{bad}\"\n"));
        assert!(
            e.contains("credentials.roles_anywhere.endpoint"),
            "{bad:?}: {e}"
        );
    }
    for good in [
        "ra.example",
        "127.0.0.1:8443",
        "[::1]:443",
        "ra-1.example.internal:443",
        "[::1]",
        "ra.example.:443",
        "ra_1.corp",
    ] {
        assert_eq!(endpoint(&format!("endpoint = \"{good}\"\n")), good);
    }
}

#[test]
fn roles_anywhere_refusals_say_why() {
    for (extra, key, why) in [
        (
            "duration_seconds = 7200\n",
            "credentials.duration_seconds",
            "chained",
        ),
        (
            "mode = \"session-token\"\n",
            "credentials.mode",
            "role session",
        ),
    ] {
        let text = RA.replace(
            "base = \"roles-anywhere\"\n",
            &format!("base = \"roles-anywhere\"\n{extra}"),
        );
        let e = error(&text);
        assert!(e.contains(key) && e.contains(why), "{e}");
    }
    for (from, to, key) in [
        ("/etc/pki/host.pem", "host.pem", "certificate"),
        (
            "profile/p\"",
            "profile/p\"\nregion = \"us-east-1\"",
            "region",
        ),
        (
            ":eu-west-1:123456789012:profile",
            ":us-east-1:123456789012:profile",
            "profile_arn",
        ),
        ("role/host", "user/host", "role_arn"),
        (
            ":eu-west-1:123456789012:trust-anchor",
            "::123456789012:trust-anchor",
            "trust_anchor_arn",
        ),
        (
            "role_arn = \"arn:aws:iam::123456789012:role/host\"\n",
            "",
            "role_arn",
        ),
    ] {
        let e = error(&RA.replace(from, to));
        assert!(
            e.contains(&format!("credentials.roles_anywhere.{key}")),
            "{to}: {e}"
        );
    }
    let e = error("[credentials]\nsource = \"sts\"\nmode = \"direct\"\n");
    assert!(
        e.contains("credentials.mode") && e.contains("roles-anywhere"),
        "{e}"
    );
    let direct = RA.replace(
        "base = \"roles-anywhere\"\n",
        "base = \"roles-anywhere\"\nmode = \"direct\"\nduration_seconds = 7200\n",
    );
    let e = error(&direct);
    assert!(
        e.contains("credentials.duration_seconds") && e.contains("as it is"),
        "direct mode serves the session's own length: {e}"
    );
    let direct = RA.replace(
        "base = \"roles-anywhere\"\n",
        "base = \"roles-anywhere\"\nmode = \"direct\"\n",
    );
    assert!(parse(&direct).is_ok());
    let e = error(
        "[credentials]\nsource = \"sts\"\nbase = \"profiles\"\n\
         [profiles.a]\naccess_key_id = \"AKIAIOSFODNN7EXAMPLE\"\nsecret_access_key = \"s\"\nmode = \"direct\"\n",
    );
    assert!(e.contains("profiles.a.mode"), "{e}");
    let e = error("[credentials]\nsource = \"sts\"\nbase = \"roles-anywhere\"\n");
    assert!(e.contains("[credentials.roles_anywhere]"), "{e}");
    let e = error(&RA.replace("base = \"roles-anywhere\"\n", ""));
    assert!(e.contains("only read with base"), "{e}");
}

#[test]
fn only_comments_hold_no_settings() {
    assert!(!holds_settings(""));
    assert!(!holds_settings("# [host]\n# mode = \"alias\"\n\n   \n"));
    assert!(holds_settings("[host]\n"));
    assert!(holds_settings("[log]\nlevel = \"info\"\n"));
    // Not TOML: it says something, and `run` says what is wrong with it.
    assert!(holds_settings("mode = \n"));
}
