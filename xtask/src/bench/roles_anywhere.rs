//! The agent on a Roles Anywhere base, for the benchmark: the tests' PKI
//! (tests/py/ra_pki.py), their CreateSession service
//! (tests/py/rolesanywhere_server.py, credentials from moto), and their
//! counting proxy (tests/py/sts_proxy.py) in front of moto for the agent's
//! own STS calls. The counts, taken before and after the measured runs,
//! show that serving calls neither: the request path is the same as on
//! any other base.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use super::targets::{Server, start_agent};
use crate::python::venv;
use crate::util::{root, work_dir};

/// The agent, the service and the proxy, killed on drop.
pub(crate) struct RolesAnywhereAgent {
    pub(crate) agent: Server,
    service: Server,
    proxy: Server,
    ca: PathBuf,
}

/// What the agent asked for so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Calls {
    pub(crate) create_session: usize,
    pub(crate) sts: usize,
}

fn script(name: &str) -> PathBuf {
    root().join("tests").join("py").join(name)
}

/// Starts a test helper that prints `ready PORT`.
fn start_helper(name: &str, args: &[&str]) -> anyhow::Result<Server> {
    let mut child = Command::new(venv()?)
        .arg(script(name))
        .arg("0")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("the helper's stdout")?).read_line(&mut line)?;
    let port: u16 = match line.trim().strip_prefix("ready ").map(str::parse) {
        Some(Ok(port)) => port,
        _ => {
            let _ = child.kill();
            bail!("{name} did not start: {line:?}");
        }
    };
    Ok(Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    })
}

impl RolesAnywhereAgent {
    pub(crate) fn start(bin: &Path, log_level: &str, moto: SocketAddr) -> anyhow::Result<Self> {
        let pki = work_dir().join("bench-pki");
        std::fs::create_dir_all(&pki)?;
        crate::util::run(Command::new(venv()?).arg(script("ra_pki.py")).arg(&pki))
            .context("making the benchmark's certificates")?;
        let path = |name: &str| pki.join(name).display().to_string();
        const ANCHOR: &str =
            "arn:aws:rolesanywhere:eu-west-1:123456789012:trust-anchor/0b1c2d3e-bench-anchor";
        const PROFILE: &str = "arn:aws:rolesanywhere:eu-west-1:123456789012:profile/bench";
        const ROLE: &str = "arn:aws:iam::123456789012:role/bench-host";
        let moto_url = format!("http://{moto}");
        let service = start_helper(
            "rolesanywhere_server.py",
            &[
                "--moto",
                &moto_url,
                "--anchor-ca",
                &path("ca.pem"),
                "--tls-cert",
                &path("server.pem"),
                "--tls-key",
                &path("server.key"),
                "--region",
                "eu-west-1",
                "--trust-anchor-arn",
                ANCHOR,
                "--profile-arn",
                PROFILE,
                "--role-arn",
                ROLE,
            ],
        )?;
        let proxy = start_helper("sts_proxy.py", &[&moto_url])?;
        let config = work_dir().join("bench-roles-anywhere.toml");
        std::fs::write(
            &config,
            format!(
                "[instance]\naccount_id = \"123456789012\"\n\
                 [credentials]\nsource = \"sts\"\nbase = \"roles-anywhere\"\nendpoint = \"http://{sts}\"\n\
                 [credentials.roles_anywhere]\ncertificate = \"{cert}\"\nchain = \"{chain}\"\n\
                 private_key = \"{key}\"\ntrust_anchor_arn = \"{ANCHOR}\"\nprofile_arn = \"{PROFILE}\"\n\
                 role_arn = \"{ROLE}\"\nendpoint = \"{service}\"\nca_bundle = \"{ca}\"\n\
                 [roles]\ndefault = \"imds-agent-demo\"\n",
                sts = proxy.addr,
                cert = path("p256.pem"),
                chain = path("inter.pem"),
                key = path("p256.key"),
                service = service.addr,
                ca = path("ca.pem"),
            ),
        )?;
        let mut cmd = Command::new(bin);
        cmd.args(["dev", "--port", "0", "--log-level", log_level, "--config"])
            .arg(&config)
            .arg("--admin-socket")
            .arg(work_dir().join("bench-ra-{port}.sock"))
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
        let agent = start_agent(cmd, "roles-anywhere-agent")?;
        Ok(Self {
            agent,
            service,
            proxy,
            ca: pki.join("ca.pem"),
        })
    }

    /// CreateSession calls the service saw, and STS calls the proxy saw.
    pub(crate) fn calls(&self) -> anyhow::Result<Calls> {
        // The service speaks TLS only, and xtask has no TLS client.
        let out = Command::new(venv()?)
            .args([
                "-c",
                "import ssl, sys, urllib.request\n\
                 ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
                 print(urllib.request.urlopen(sys.argv[2], context=ctx, timeout=10).read().decode())",
            ])
            .arg(&self.ca)
            .arg(format!("https://{}/_calls", self.service.addr))
            .output()
            .context("asking the Roles Anywhere service for its calls")?;
        if !out.status.success() {
            bail!(
                "the Roles Anywhere service's calls: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let sessions: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
        let mut stream = TcpStream::connect(self.proxy.addr)?;
        stream.write_all(
            b"GET /__proxy/calls HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n",
        )?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer)?;
        let body = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| &answer[at + 4..])
            .context("the proxy's answer")?;
        let sts: Vec<serde_json::Value> = serde_json::from_slice(body)?;
        Ok(Calls {
            create_session: sessions.len(),
            sts: sts.len(),
        })
    }
}
