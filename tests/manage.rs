//! The developer's laptop: the `/manage` page and its API, a request that
//! waits for an MFA code typed on the page, the page's defences against
//! other local users and web pages, a desktop notification on a real
//! session bus, and the page in a real browser (headless Chromium).
//!
//! STS is moto behind the test proxy, which checks GetSessionToken's
//! TokenCode against a TOTP secret as AWS does (moto checks none); the
//! tests compute the codes.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::sts::{StsProxy, agent_credentials, moto};
use support::{Agent, Reply, agent_bin, config_file, raw, wait_for_showing};

const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const DEV_SERIAL: &str = "arn:aws:iam::123456789012:mfa/dev";

/// The code of the moment for `SECRET`.
fn totp_now() -> String {
    let secret = imds_agent::creds::mfa::TotpSecret::parse(SECRET).unwrap();
    let step = imds_agent::creds::mfa::TotpSecret::step(std::time::SystemTime::now());
    secret.code_for_step(step).expose().to_owned()
}

/// A code that is not the one of the moment (nor of a step either side).
fn wrong_code() -> String {
    let now: u32 = totp_now().parse().unwrap();
    format!("{:06}", (now + 500_000) % 1_000_000)
}

/// Two profiles with MFA devices and no secret: a person types the codes.
fn config(proxy: &StsProxy, wait_seconds: u32) -> String {
    format!(
        "[instance]\naccount_id = \"123456789012\"\n\
         [credentials]\nsource = \"sts\"\nendpoint = \"{}\"\nbase = \"profiles\"\nprofile = \"dev\"\n\
         duration_seconds = 900\nfirst_fetch_wait_ms = 3000\nmfa_prompt_wait_seconds = {wait_seconds}\n\
         [profiles.dev]\naccess_key_id = \"AKIADEVELOPER0000001\"\nsecret_access_key = \"devsecret\"\n\
         mfa_serial = \"{DEV_SERIAL}\"\n\
         [profiles.other]\naccess_key_id = \"AKIAOTHERPROFILE0001\"\nsecret_access_key = \"othersecret\"\n\
         mfa_serial = \"arn:aws:iam::123456789012:mfa/other\"\n\
         [roles]\ndefault = \"app\"\n",
        proxy.url()
    )
}

/// A dev agent with `config`, and the environment `env` adds.
fn agent_with(config: &str, env: &[(&str, &str)]) -> (Agent, tempfile::TempDir) {
    let (dir, path) = config_file(config);
    let mut cmd = Command::new(agent_bin());
    cmd.args(["dev", "--port", "0", "--config"]).arg(&path);
    agent_credentials(&mut cmd);
    cmd.env_remove("DBUS_SESSION_BUS_ADDRESS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    (Agent::start(cmd), dir)
}

/// The page's address and secret, from the banner.
struct Page {
    addr: SocketAddr,
    secret: String,
}

impl Page {
    fn of(agent: &Agent) -> Page {
        let banner = agent.banner();
        let url = banner
            .lines()
            .find(|l| l.starts_with("http://") && l.contains("/manage?k="))
            .unwrap_or_else(|| panic!("no /manage address in the banner:\n{banner}"));
        let rest = url.trim_start_matches("http://");
        let (addr, secret) = rest.split_once("/manage?k=").unwrap();
        Page {
            addr: addr.parse().unwrap(),
            secret: secret.to_owned(),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/manage?k={}", self.addr, self.secret)
    }

    /// One request with `headers` (Host is the page's unless given).
    fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            head.push_str(&format!("Host: {}\r\n", self.addr));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        raw(self.addr, head.as_bytes())
    }

    /// An API call with the secret in the Authorization header.
    fn api(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let auth = format!("Bearer {}", self.secret);
        let reply = self.send(
            method,
            path,
            &[("Authorization", &auth), ("Content-Type", content_type)],
            body,
        );
        let json = serde_json::from_slice(&reply.body)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {}", reply.text()));
        (reply.status, json)
    }

    fn session(&self) -> serde_json::Value {
        let (status, body) = self.api("GET", "/manage/session", "text/plain", "");
        assert_eq!(status, 200, "{body}");
        body
    }
}

const FORM: &str = "application/x-www-form-urlencoded";
const JSON: &str = "application/json";

#[test]
fn the_manage_api_answers_as_aws_mock_metadata_does() {
    let proxy = StsProxy::start();
    proxy.check_totp(SECRET);
    let (agent, _dir) = agent_with(&config(&proxy, 0), &[]);
    let page = Page::of(&agent);

    let (status, profiles) = page.api("GET", "/manage/profiles", JSON, "");
    assert_eq!(status, 200, "{profiles}");
    let names: Vec<&str> = profiles["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dev", "other"]);
    assert_eq!(profiles["profiles"][0]["active"], true);
    assert_eq!(profiles["profiles"][0]["accessKeySuffix"], "0001");
    let (status, dev) = page.api("GET", "/manage/profiles/dev", JSON, "");
    assert_eq!(
        (status, &dev["profile"]["mfaSerial"]),
        (200, &serde_json::json!(DEV_SERIAL))
    );
    let (status, missing) = page.api("GET", "/manage/profiles/nope", JSON, "");
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["message"], "profile does not exist");
    assert!(page.session().get("session").is_none(), "no session yet");

    // 400: neither given, a malformed code, an unknown profile.
    for (body, why) in [
        ("", "token and/or profile"),
        ("token=12ab56", "six digits"),
        ("token=1234567", "six digits"),
        ("profile=nope", "does not exist"),
    ] {
        let (status, answer) = page.api("POST", "/manage/session", FORM, body);
        assert_eq!(status, 400, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{body}: {message}");
    }
    let (status, _) = page.api("POST", "/manage/session", JSON, "{\"token\": ");
    assert_eq!(status, 400, "malformed JSON");
    assert_eq!(proxy.count("GetSessionToken"), 0, "nothing reached STS");

    // 403: a code STS refuses.
    let (status, refused) = page.api(
        "POST",
        "/manage/session",
        FORM,
        &format!("token={}", wrong_code()),
    );
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("MultiFactorAuthentication failed"),
        "{refused}"
    );
    assert!(page.session().get("session").is_none());

    // 200: the session, never its secret or token.
    let (status, opened) = page.api(
        "POST",
        "/manage/session",
        FORM,
        &format!("token={}", totp_now()),
    );
    assert_eq!(status, 200, "{opened}");
    let session = &opened["session"];
    assert_eq!(
        session["accessKeySuffix"].as_str().map(str::len),
        Some(4),
        "{opened}"
    );
    assert!(session["expiration"].as_str().is_some(), "{opened}");
    assert!(session.get("secretKey").is_none() && session.get("sessionToken").is_none());
    assert_eq!(opened["profile"]["name"], "dev");
    let calls = proxy.calls();
    let tokens: Vec<&serde_json::Value> = calls
        .iter()
        .filter(|c| c["action"] == "GetSessionToken")
        .map(|c| &c["params"]["TokenCode"])
        .collect();
    assert_eq!(tokens.len(), 2, "the refused code and the good one");
    let last = calls
        .iter()
        .rfind(|c| c["action"] == "GetSessionToken")
        .unwrap();
    assert_eq!(last["params"]["SerialNumber"], DEV_SERIAL);

    // The workload gets credentials from the session (its role is fetched
    // again at once).
    wait_for_showing("app's credentials", Duration::from_secs(15), || {
        let reply = support::get(
            agent.addr,
            "/latest/meta-data/iam/security-credentials/app",
            &[],
        );
        let doc: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        if doc["Code"] == "Success" {
            Ok(())
        } else {
            Err(doc)
        }
    });

    // Switching profile, by the issue's `session=` spelling, in JSON.
    let (status, switched) = page.api("POST", "/manage/session", JSON, "{\"session\": \"other\"}");
    assert_eq!(status, 200, "{switched}");
    assert_eq!(switched["profile"]["name"], "other");
    assert!(
        switched.get("session").is_none(),
        "the other profile has no session yet"
    );

    // DELETE clears the session.
    let (status, _) = page.api("POST", "/manage/session", JSON, "{\"profile\": \"dev\"}");
    assert_eq!(status, 200);
    let (status, _) = page.api(
        "POST",
        "/manage/session",
        JSON,
        &format!("{{\"token\": \"{}\"}}", totp_now()),
    );
    assert_eq!(status, 200);
    assert!(page.session().get("session").is_some());
    let (status, cleared) = page.api("DELETE", "/manage/session", JSON, "");
    assert_eq!(status, 200, "{cleared}");
    assert!(cleared.get("session").is_none(), "{cleared}");
    let (status, _) = page.api("GET", "/manage/nothing-here", JSON, "");
    assert_eq!(status, 404);
}

/// A request an attacker sends: method, path, headers, body, the status
/// it must get.
type Attack<'a> = (&'a str, String, Vec<(&'a str, String)>, &'a str, u16);

#[test]
fn requests_without_the_secret_from_elsewhere_or_to_another_host_change_nothing() {
    let proxy = StsProxy::start();
    proxy.check_totp(SECRET);
    let (agent, _dir) = agent_with(&config(&proxy, 0), &[]);
    let page = Page::of(&agent);
    let (status, _) = page.api(
        "POST",
        "/manage/session",
        FORM,
        &format!("token={}", totp_now()),
    );
    assert_eq!(status, 200);
    let before = page.session();
    let with_secret = |path: &str| format!("{path}?k={}", page.secret);
    let own = page.addr.to_string();
    let attacks: Vec<Attack<'_>> = vec![
        // Another local user (or a web page) without the secret.
        ("DELETE", "/manage/session".into(), vec![], "", 403),
        (
            "POST",
            "/manage/ui/clear".into(),
            vec![("Content-Type", FORM.into())],
            "",
            403,
        ),
        (
            "POST",
            "/manage/session".into(),
            vec![("Content-Type", FORM.into())],
            "profile=other",
            403,
        ),
        (
            "POST",
            with_secret("/manage/session").replace("?k=", "?k=0"),
            vec![],
            "profile=other",
            403,
        ),
        ("GET", "/manage".into(), vec![], "", 403),
        (
            "GET",
            "/manage/session".into(),
            vec![("Authorization", "Bearer nope".into())],
            "",
            403,
        ),
        // A web page's form or fetch: a foreign Origin, with the secret.
        (
            "POST",
            with_secret("/manage/ui/clear"),
            vec![("Origin", "http://evil.example".into())],
            "",
            403,
        ),
        (
            "POST",
            with_secret("/manage/session"),
            vec![("Origin", "null".into()), ("Content-Type", FORM.into())],
            "profile=other",
            403,
        ),
        (
            "POST",
            with_secret("/manage/ui/profile"),
            vec![
                (
                    "Origin",
                    format!("http://127.0.0.1:{}", page.addr.port() + 1),
                ),
                ("Content-Type", FORM.into()),
            ],
            "profile=other",
            403,
        ),
        (
            "DELETE",
            with_secret("/manage/session"),
            vec![("Sec-Fetch-Site", "cross-site".into())],
            "",
            403,
        ),
        // DNS rebinding: the page's address under another name.
        (
            "DELETE",
            with_secret("/manage/session"),
            vec![("Host", format!("rebind.example:{}", page.addr.port()))],
            "",
            421,
        ),
        (
            "GET",
            with_secret("/manage"),
            vec![("Host", "evil.example".into())],
            "",
            421,
        ),
        (
            "POST",
            with_secret("/manage/ui/clear"),
            vec![("Host", String::new())],
            "",
            421,
        ),
    ];
    for (method, path, headers, body, expected) in &attacks {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = page.send(method, path, &headers, body);
        assert_eq!(
            reply.status,
            *expected,
            "{method} {path} {headers:?}: {}",
            reply.text()
        );
        for header in [
            "content-security-policy",
            "x-frame-options",
            "referrer-policy",
        ] {
            assert!(reply.header(header).is_some(), "{header} on a refusal");
        }
    }
    // Another local user holds hundreds of idle connections to the page:
    // they cost the page its slots for a while, never the IMDS.
    let idle: Vec<std::net::TcpStream> = (0..140)
        .filter_map(|_| std::net::TcpStream::connect(page.addr).ok())
        .collect();
    assert!(idle.len() > 100, "{} connections", idle.len());
    let reply = support::get(agent.addr, "/latest/meta-data/instance-id", &[]);
    assert_eq!(reply.status, 200, "the IMDS answers through the flood");
    drop(idle);
    let after = wait_for_showing("the page after the flood", Duration::from_secs(10), || {
        let reply = page.send(
            "GET",
            "/manage/session",
            &[("Authorization", &format!("Bearer {}", page.secret))],
            "",
        );
        if reply.status == 200 {
            Ok(serde_json::from_slice::<serde_json::Value>(&reply.body).unwrap())
        } else {
            Err(reply.status)
        }
    });
    assert_eq!(before, after, "nothing changed");
    assert_eq!(after["profile"]["name"], "dev");
    // The page's own form, from its own origin, is taken.
    let reply = page.send(
        "POST",
        &with_secret("/manage/ui/clear"),
        &[("Origin", &format!("http://{own}")), ("Content-Type", FORM)],
        "",
    );
    assert_eq!(reply.status, 303, "{}", reply.text());
    assert!(page.session().get("session").is_none());
    let page_reply = page.send("GET", &with_secret("/manage"), &[], "");
    assert_eq!(page_reply.status, 200);
    assert_eq!(page_reply.header("x-frame-options"), Some("DENY"));
    assert_eq!(page_reply.header("referrer-policy"), Some("no-referrer"));
    let csp = page_reply.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(
        !page_reply.text().contains("<script"),
        "no script on the page"
    );
}

#[test]
fn botocore_waits_for_a_code_typed_on_the_page() {
    let proxy = StsProxy::start();
    proxy.check_totp(SECRET);
    let (agent, _dir) = agent_with(&config(&proxy, 12), &[]);
    let page = Page::of(&agent);
    let endpoint = format!("{}/", agent.url());
    let client = std::thread::spawn(move || {
        support::botocore_with(
            &endpoint,
            &[],
            &[("IMDS_TEST_METADATA_TIMEOUT", "15")],
            &[moto()],
        )
    });
    wait_for_showing(
        "a request waiting for a code",
        Duration::from_secs(20),
        || {
            let session = page.session();
            if session["mfaPrompt"]["waiting"] == true {
                Ok(session)
            } else {
                Err(session)
            }
        },
    );
    let prompt = page.session()["mfaPrompt"].clone();
    assert_eq!(prompt["serial"], DEV_SERIAL, "{prompt}");
    let form = format!("token={}", totp_now());
    let reply = page.send(
        "POST",
        &format!("/manage/ui/code?k={}", page.secret),
        &[
            ("Content-Type", FORM),
            ("Origin", &format!("http://{}", page.addr)),
        ],
        &form,
    );
    assert_eq!(reply.status, 303, "{}", reply.text());
    assert!(
        reply.header("location").unwrap().contains("done=opened"),
        "{:?}",
        reply.header("location")
    );
    let report = client.join().unwrap();
    assert_eq!(report["method"], "iam-role", "{report}");
    assert!(
        report["caller_arn"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:sts::123456789012:assumed-role/app/"),
        "{report}"
    );
    assert_eq!(proxy.count("GetSessionToken"), 1, "one session");
}

/// Whether `paths` all exist: when one is missing, as root (CI, which
/// installs them) the test fails; otherwise it is skipped, saying so.
fn have(paths: &[&str], packages: &str) -> bool {
    let missing: Vec<&&str> = paths
        .iter()
        .filter(|p| !std::path::Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let root = nix::unistd::geteuid().is_root();
    assert!(
        !root,
        "{missing:?} missing: `bash .ci/run` installs {packages}"
    );
    eprintln!("skipped: {missing:?} missing (apt-get install {packages})");
    false
}

/// A session bus of the test's own, killed on drop.
struct SessionBus {
    daemon: std::process::Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl SessionBus {
    fn start() -> SessionBus {
        use std::io::BufRead as _;
        let dir = tempfile::tempdir().unwrap();
        let mut daemon = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .arg(format!(
                "--address=unix:path={}",
                dir.path().join("bus").display()
            ))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting dbus-daemon");
        let mut line = String::new();
        std::io::BufReader::new(daemon.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("dbus-daemon's address");
        SessionBus {
            daemon,
            address: line.trim().to_owned(),
            _dir: dir,
        }
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// What a notification service saw of one Notify: summary, body, actions.
type Notified = (String, String, Vec<String>);

/// A notification service on `address`: records each Notify call's
/// summary and body, answers with an id, and (with `click`) invokes the
/// "default" action of the first notification, as a person clicking it.
fn notification_service(
    address: String,
    click: bool,
) -> (
    std::sync::mpsc::Receiver<Notified>,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (up_tx, up_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            use futures_util::StreamExt as _;
            let connection = zbus::connection::Builder::address(address.as_str())
                .unwrap()
                .build()
                .await
                .expect("connecting to the test's bus");
            connection
                .request_name("org.freedesktop.Notifications")
                .await
                .expect("owning the notification service's name");
            let mut stream = zbus::MessageStream::from(&connection);
            up_tx.send(()).unwrap();
            let mut next_id = 41u32;
            while let Some(Ok(message)) = stream.next().await {
                let header = message.header();
                if header.message_type() != zbus::message::Type::MethodCall
                    || header.member().map(|m| m.as_str()) != Some("Notify")
                {
                    continue;
                }
                type Notify<'a> = (
                    String,
                    u32,
                    String,
                    String,
                    String,
                    Vec<String>,
                    std::collections::HashMap<String, zbus::zvariant::OwnedValue>,
                    i32,
                );
                let Ok((_app, _replaces, _icon, summary, body, actions, _hints, _timeout)) =
                    message.body().deserialize::<Notify<'_>>()
                else {
                    continue;
                };
                next_id += 1;
                connection.reply(&header, &(next_id,)).await.unwrap();
                if click && next_id == 42 {
                    // A person takes a moment to click.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    connection
                        .emit_signal(
                            None::<zbus::names::BusName<'_>>,
                            "/org/freedesktop/Notifications",
                            "org.freedesktop.Notifications",
                            "ActionInvoked",
                            &(next_id, "default"),
                        )
                        .await
                        .unwrap();
                }
                if tx.send((summary, body, actions)).is_err() {
                    return;
                }
            }
        });
    });
    up_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the notification service is up");
    (rx, thread)
}

#[test]
fn a_needed_code_is_notified_on_the_session_bus_and_its_action_opens_the_page() {
    if !have(&["/usr/bin/dbus-daemon"], "dbus-daemon") {
        return;
    }
    let bus = SessionBus::start();
    let (notified, _service) = notification_service(bus.address.clone(), true);
    // A fake xdg-open records what it was asked to open.
    let bin = tempfile::tempdir().unwrap();
    let opened = bin.path().join("opened");
    let script = bin.path().join("xdg-open");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" > {0}.argv\ncat \"$1\" > {0}.tmp && mv {0}.tmp {0}\n",
            opened.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let runtime = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        runtime.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let proxy = StsProxy::start();
    let (agent, _dir) = agent_with(
        &config(&proxy, 0),
        &[
            ("DBUS_SESSION_BUS_ADDRESS", &bus.address),
            ("PATH", &path),
            ("XDG_RUNTIME_DIR", &runtime.path().display().to_string()),
        ],
    );
    let page = Page::of(&agent);
    // The default role is prefetched: its session needs a code, and nobody
    // waits, so the person is told.
    let (summary, body, actions) = notified
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("no notification; the agent's log:\n{}", agent.logs()));
    assert!(summary.contains("MFA code"), "{summary}");
    assert!(body.contains(DEV_SERIAL) && body.contains("dev"), "{body}");
    assert!(body.contains("role app"), "{body}");
    assert_eq!(actions, ["default", "Enter the code"]);
    // The click opened the page, through a file only the user can read:
    // the secret is not on xdg-open's command line.
    let file = wait_for_showing("xdg-open to be run", Duration::from_secs(10), || {
        std::fs::read_to_string(&opened)
            .map_err(|e| format!("{e}; the agent's log:\n{}", agent.logs()))
    });
    assert!(file.contains(&page.url()), "{file}");
    let argv = std::fs::read_to_string(opened.with_extension("argv")).unwrap();
    assert!(
        !argv.contains(&page.secret),
        "the secret is on a command line: {argv}"
    );
    let handed = std::path::PathBuf::from(argv.trim());
    let mode = std::fs::metadata(&handed).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077,
        0,
        "{handed:?} is private"
    );
}

#[test]
fn the_page_in_a_real_browser() {
    if !have(
        &["/usr/bin/chromium", "/usr/bin/chromedriver"],
        "chromium chromium-driver",
    ) {
        return;
    }
    let proxy = StsProxy::start();
    proxy.check_totp(SECRET);
    let (agent, _dir) = agent_with(&config(&proxy, 0), &[]);
    let page = Page::of(&agent);
    let artifacts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let out = Command::new(support::python())
        .arg(support::py_script("manage_browser.py"))
        .arg(page.url())
        .arg(SECRET)
        .arg(&artifacts)
        .arg(agent.url())
        .env("SE_OFFLINE", "true")
        .output()
        .expect("running manage_browser.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "manage_browser.py failed: {}\nstdout: {stdout}\nstderr: {}\nthe agent's log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        agent.logs()
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["session_before"], "none open", "{report}");
    assert_eq!(
        report["notice_after_code"], "The MFA session is open.",
        "{report}"
    );
    assert!(
        report["session_after_code"]
            .as_str()
            .unwrap()
            .contains("expires"),
        "{report}"
    );
    let roles = report["roles_after_code"].as_str().unwrap();
    assert!(
        roles.contains("app") && roles.contains("expires"),
        "{report}"
    );
    assert_eq!(report["session_after_clear"], "none open", "{report}");
    assert_eq!(report["profile_after_switch"], "other", "{report}");
    assert!(artifacts.join("manage.png").is_file());
    assert_eq!(proxy.count("GetSessionToken"), 1);
}
