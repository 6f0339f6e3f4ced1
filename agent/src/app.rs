//! Putting the parts together: from a checked `Config` to a running agent.
//!
//! `run` works in two phases. The privileged phase runs on the main thread
//! with nothing else running: it installs the firewall and the address,
//! binds the listeners and the admin socket, opens sock_diag, walks the
//! cgroup tree, forks the stop helper and drops privileges. Only then does
//! the async runtime start; `build` wires the serving parts inside it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::HeaderValue;

use crate::admin::{AdminSocket, Backend};
use crate::assign::files::Snapshot;
use crate::assign::glob::Glob;
use crate::assign::policy::Policy;
use crate::assign::rules::RuleSet;
use crate::assign::watch::{OnChange, RulesNudge, RulesStatus, SharedStatus};
use crate::assign::{Assignments, Defaults, EnvRoles, RoleAssignment};
use crate::attribution::{Attribution, ByPeerAddress, Containers, Kernel, Local, Rescanner};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, CredentialsConfig, HostMode, StsBase, StsConfig};
use crate::creds::engine::{self, BaseConfig, Engine, Mode};
use crate::creds::sts::{AwsSts, Metered, default_chain, endpoint_from_env};
use crate::creds::{CredentialSource, Holder, StaticSource, session_name};
use crate::http::{AppState, Seen, ServeOptions, Upstream, bind, router, serve};
use crate::imds::{Imds, TokenAuthority};
use crate::net::Installed;
use crate::net::stop_helper::StopHelper;
use crate::notify::Notifier;
use crate::privs::{self, Target};
use crate::reload::{Reloader, Source};
use crate::timefmt::http_date;

/// The running parts of an agent.
#[derive(Debug, Clone)]
pub struct Agent {
    /// What the IMDS handler uses.
    pub state: AppState,
    /// The STS engine, with `source = "sts"`.
    pub engine: Option<Engine>,
    /// Which role workloads get.
    pub roles: Arc<dyn RoleAssignment>,
    /// The same, with the rules it holds (for the admin socket).
    pub assignments: Arc<Assignments>,
    /// The workloads seen recently.
    pub seen: Arc<Seen>,
    /// The state of the rule files.
    pub rules_status: SharedStatus,
    /// Has the rules' watcher read them again.
    pub rules_nudge: RulesNudge,
}

impl Agent {
    /// What the admin socket and the `/manage` page serve from.
    pub fn backend(&self) -> Backend {
        Backend {
            engine: self.engine.clone(),
            roles: Arc::clone(&self.roles),
            assignments: Arc::clone(&self.assignments),
            rules_status: Arc::clone(&self.rules_status),
            seen: Arc::clone(&self.seen),
            reloader: None,
        }
    }
}

/// How often the cgroup tree is walked even when no lookup missed, so new
/// units' roles are fetched before their first request.
const RESCAN_EVERY: Duration = Duration::from_secs(30);

/// Builds the agent for `config`, with a fresh token key, and starts its
/// background work: the credentials engine, the cgroup rescans, the Docker
/// watcher and the role rules watcher. `kernel` is what the privileged
/// phase opened for attribution. Must run inside the tokio runtime.
pub fn build(
    config: &Config,
    clock: Arc<dyn Clock>,
    kernel: Option<Kernel>,
    carried: Option<&[u8]>,
) -> anyhow::Result<Agent> {
    // Checked before the credentials are: what the rules ask for is the
    // first thing to fix.
    let snapshot = Snapshot::read(&config.roles.dir).map_err(anyhow::Error::from)?;
    let rules = snapshot.parse().map_err(rule_errors)?;
    let policy = policy(config);
    let problems = assignment_problems(config, &policy, &rules);
    if !problems.is_empty() {
        anyhow::bail!(
            "role assignments the agent can't serve:\n  {}",
            problems.join("\n  ")
        );
    }
    let (credentials, engine, first_fetch_wait): (Arc<dyn CredentialSource>, _, _) =
        match &config.credentials {
            CredentialsConfig::Static { keys, lifetime } => (
                Arc::new(StaticSource::new(
                    keys.clone(),
                    *lifetime,
                    Some(config.instance.account_id.clone()),
                )),
                None,
                Duration::ZERO,
            ),
            CredentialsConfig::Sts(sts) => {
                let engine = sts_engine(config, sts, Arc::clone(&clock))?;
                (Arc::new(engine.clone()), Some(engine), sts.first_fetch_wait)
            }
        };
    let containers = config
        .attribution
        .docker
        .as_ref()
        .map(|_| Arc::new(Containers::default()));
    let rules_status: SharedStatus = Arc::new(std::sync::Mutex::new(RulesStatus {
        dir: config.roles.dir.clone(),
        present: !snapshot.missing(),
        files: snapshot.len(),
        rules: rules.len(),
        refused: None,
    }));
    if !snapshot.missing() {
        tracing::info!(dir = %config.roles.dir.display(), files = snapshot.len(), rules = rules.len(), "role rules loaded");
    }
    if let Some(warning) = config.shared_keys_warning(rules.len()) {
        tracing::warn!("{warning}");
    }
    if let Some(warning) = config.short_sessions_warning() {
        tracing::warn!("{warning}");
    }
    let defaults = Defaults {
        default: config.roles.default.clone(),
        container_default: config.roles.container_default.clone(),
        env_roles: config.attribution.docker.as_ref().map(|d| EnvRoles {
            allowed: d.allowed_env_roles.iter().map(|g| Glob::role(g)).collect(),
        }),
        session_per_workload: config.roles.session_per_workload,
    };
    let assignments = Arc::new(Assignments::new(
        defaults,
        rules,
        engine.clone(),
        containers.clone(),
        kernel.as_ref().map(|k| Arc::clone(&k.cgroups)),
    ));
    if let Some(engine) = &engine {
        engine.set_liveness(liveness(
            kernel.as_ref().map(|k| Arc::clone(&k.cgroups)),
            containers.clone(),
        ));
    }
    if let (Some(engine), Some(bytes)) = (&engine, carried) {
        take_back(engine, bytes, &assignments);
    }
    let sync = sync_engine(engine.as_ref(), &assignments);
    sync();
    if let Some(engine) = &engine {
        tokio::spawn(engine.clone().run());
    }
    let cgroup_root = kernel.as_ref().map(|k| k.root.clone());
    let attribution: Arc<dyn Attribution> = match kernel {
        Some(kernel) => {
            let rescanner = Rescanner::new(Arc::clone(&kernel.cgroups));
            tokio::spawn(Arc::clone(&rescanner).run(Arc::clone(&sync)));
            tokio::spawn(rescan_periodically(Arc::clone(&rescanner)));
            let local = Local::new(kernel.diag, kernel.cgroups, rescanner, containers.clone());
            Arc::new(match kernel.redirect {
                Some(redirect) => local.with_redirect(redirect, kernel.exe),
                None => local,
            })
        }
        None => Arc::new(ByPeerAddress),
    };
    if let (Some(docker), Some(containers)) = (&config.attribution.docker, &containers) {
        let on_change = Arc::clone(&sync);
        let watcher = crate::docker::Watcher::new(
            crate::docker::DockerClient::new(&docker.socket),
            Arc::clone(containers),
            docker.env_role_var.clone(),
            cgroup_root,
            Box::new(move || on_change()),
        );
        tokio::spawn(watcher.run());
    }
    let (rules_nudge, nudges) = RulesNudge::new();
    tokio::spawn(crate::assign::watch::watch(
        config.roles.dir.clone(),
        snapshot,
        Arc::clone(&assignments),
        Arc::clone(&rules_status),
        sync,
        policy,
        nudges,
    ));
    let imds = Imds::new(
        &config.instance,
        config.settings.clone(),
        token_authority()?,
        Arc::clone(&credentials),
    );
    let (imds, upstream) = match &config.proxy {
        Some(proxy) => {
            tracing::info!(upstream = %proxy.upstream, "proxy mode: allowed paths come from the real IMDS");
            (
                imds.with_upstream(proxy.allow.clone()),
                Some(Arc::new(Upstream::new(proxy.upstream, proxy.timeout))),
            )
        }
        None => (imds, None),
    };
    let last_modified = HeaderValue::from_str(&http_date(config.instance.last_modified))
        .context("formatting Last-Modified")?;
    let roles: Arc<dyn RoleAssignment> = Arc::clone(&assignments) as Arc<dyn RoleAssignment>;
    let seen = Arc::new(Seen::default());
    let state = AppState {
        imds: Arc::new(imds),
        attribution,
        roles: Arc::clone(&roles),
        credentials,
        first_fetch_wait,
        clock,
        last_modified,
        upstream,
        seen: Arc::clone(&seen),
    };
    Ok(Agent {
        state,
        engine,
        roles,
        assignments,
        seen,
        rules_status,
        rules_nudge,
    })
}

/// Serves again what the previous run carried over (before the first
/// prefetch, which then finds those roles cached).
fn take_back(engine: &Engine, bytes: &[u8], assignments: &Assignments) {
    match engine.take_carried(bytes, |role| assignments.still_assigned(role)) {
        Ok(taken) => tracing::info!(
            kept = taken.kept,
            dropped = taken.dropped,
            "credentials carried over from the previous run (roles no longer assigned, or due for refresh, were dropped)"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "credentials carried over from the previous run were dropped")
        }
    }
}

/// What to do whenever assignments or workloads change: drop the
/// credentials of roles no assignment names any more (at once, not at
/// expiry), and fetch every role a known workload will ask for.
fn sync_engine(engine: Option<&Engine>, assignments: &Arc<Assignments>) -> OnChange {
    let engine = engine.cloned();
    let assignments = Arc::clone(assignments);
    Arc::new(move || {
        if let Some(engine) = &engine {
            engine.retain(|role| assignments.still_assigned(role));
            let wanted = assignments.wanted_by_need();
            engine.set_wanted_by_need(wanted.live, wanted.foreseen);
        }
    })
}

/// Whether a workload that used credentials is still there: its cgroup
/// was seen by the last walk of the tree, its container still runs.
fn liveness(
    cgroups: Option<Arc<crate::attribution::cgroup::CgroupIndex>>,
    containers: Option<Arc<Containers>>,
) -> engine::Liveness {
    Arc::new(move |holder: &Holder| match holder {
        Holder::Cgroup(id) => cgroups.as_ref().is_some_and(|c| c.contains(*id)),
        // The registry answers only for containers whose process lives.
        Holder::Container(id) => containers.as_ref().is_some_and(|c| c.by_id(id).is_some()),
        Holder::Unchecked => false,
    })
}

/// Walks the cgroup tree every `RESCAN_EVERY` (each walk syncs the
/// engine, see `Rescanner::run`).
async fn rescan_periodically(rescanner: Arc<Rescanner>) {
    let mut every = tokio::time::interval(RESCAN_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        rescanner.request().await;
    }
}

/// What the agent's own credentials can't give (role chaining's hour,
/// `mode = "direct"`'s one role).
pub fn policy(config: &Config) -> Policy {
    let mut policy = Policy {
        default_account: config.configured_account.clone(),
        partition: config.instance.partition.clone(),
        ..Policy::default()
    };
    if let CredentialsConfig::Sts(sts) = &config.credentials
        && let StsBase::RolesAnywhere(settings) = &sts.base
    {
        policy.chained = true;
        if sts.identity.mode == Mode::Direct {
            policy.direct_role = Some(settings.session.role_arn.clone());
        }
    }
    policy
}

/// Why the defaults and `rules` ask for what `policy` can't give.
pub fn assignment_problems(config: &Config, policy: &Policy, rules: &RuleSet) -> Vec<String> {
    let mut out = Vec::new();
    for (key, role) in [
        ("roles.default", &config.roles.default),
        ("roles.container_default", &config.roles.container_default),
    ] {
        if let Some(role) = role {
            out.extend(policy.problems_of(role, key));
        }
    }
    if policy.direct_role.is_some()
        && config
            .attribution
            .docker
            .as_ref()
            .is_some_and(|d| !d.allowed_env_roles.is_empty())
    {
        out.push("attribution.allowed_env_roles: containers would name roles, and mode = \"direct\" serves every one of them the one Roles Anywhere role (set it to [])".to_owned());
    }
    out.extend(policy.problems(rules));
    out
}

fn rule_errors(errors: Vec<crate::config::ConfigError>) -> anyhow::Error {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    anyhow::anyhow!("bad role rules:\n  {}", lines.join("\n  "))
}

fn sts_engine(config: &Config, sts: &StsConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Engine> {
    let env = |name: &str| std::env::var(name).ok();
    let endpoint = sts.endpoint.clone().or_else(|| endpoint_from_env(&env));
    if let Some(endpoint) = &endpoint {
        tracing::info!(%endpoint, "STS endpoint");
    }
    let base = match &sts.base {
        StsBase::Chain { instance_profile } => BaseConfig::Chain {
            provider: default_chain(&sts.identity.region, *instance_profile),
            identity: sts.identity.clone(),
        },
        StsBase::Bootstrap => BaseConfig::Bootstrap {
            identity: sts.identity.clone(),
        },
        StsBase::RolesAnywhere(settings) => {
            let provider =
                crate::creds::roles_anywhere::provider::RolesAnywhere::new((**settings).clone())
                    .context("IAM Roles Anywhere")?;
            BaseConfig::RolesAnywhere {
                provider,
                identity: sts.identity.clone(),
                certificate: settings.certificate.display().to_string(),
            }
        }
        StsBase::Profiles { profiles, active } => BaseConfig::Profiles {
            profiles: profiles.clone(),
            active: active.clone(),
        },
    };
    let settings = engine::Settings {
        keep: sts.keep,
        error_ttl: sts.error_ttl,
        max_backoff: Duration::from_secs(60),
        rate: sts.rate,
        burst: sts.burst,
        max_roles: sts.max_roles,
        idle_ttl: sts.idle_ttl,
        default_account: config.configured_account.clone(),
        default_partition: config.instance.partition.clone(),
        default_session_name: session_name::sanitize(&format!("imds-agent-{}", config.hostname))
            .unwrap_or_else(|| "imds-agent".to_owned()),
        source_identity: sts.source_identity,
        session_tags: sts.session_tags,
        hostname: config.hostname.clone(),
        jitter_seed: random_u64()?,
        mfa_prompt_wait: sts.mfa_prompt_wait,
        prefetch_spread: sts.prefetch_spread,
    };
    Ok(Engine::new(
        Arc::new(Metered::new(AwsSts::new(endpoint))),
        clock,
        base,
        settings,
    ))
}

fn random_u64() -> anyhow::Result<u64> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 8];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    Ok(u64::from_be_bytes(bytes))
}

/// A token authority with a key drawn from the OS's random source. A new
/// key at every start means a restart invalidates every token; clients
/// fetch a new one on the resulting 401.
fn token_authority() -> anyhow::Result<TokenAuthority> {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut key = [0u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    Ok(TokenAuthority::new(key, random_u64()?))
}

/// What a clean stop undoes.
#[derive(Debug)]
enum OnStop {
    /// Nothing was added.
    Nothing,
    /// The agent may still remove its addresses itself.
    Direct(Installed),
    /// The stop helper removes them.
    Helper(StopHelper),
}

impl OnStop {
    fn run(self) {
        let done = match self {
            OnStop::Nothing => return,
            OnStop::Direct(installed) => installed.remove_addresses(),
            OnStop::Helper(helper) => helper.stop(),
        };
        match done {
            Ok(()) => tracing::info!(
                "addresses removed from lo; the nftables table stays (imds-agent cleanup removes it)"
            ),
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                "could not remove the agent's addresses"
            ),
        }
    }
}

/// What the privileged phase hands to the serving phase.
struct Prepared {
    listeners: Vec<std::net::TcpListener>,
    bound: Vec<SocketAddr>,
    admin: AdminSocket,
    kernel: Option<Kernel>,
}

/// Sets the host up, binds, and drops privileges, as `config` says. On
/// error, whatever was set up is undone through `on_stop`.
fn privileged_phase(config: &Config, on_stop: &mut OnStop) -> anyhow::Result<Prepared> {
    // Resolved first: a bad user name fails before anything changes.
    let mut target = privs::target(&config.privileges)?;
    let agent_uid = target
        .as_ref()
        .map_or_else(|| nix::unistd::Uid::effective().as_raw(), Target::uid);
    let installed = crate::net::setup(&config.host, agent_uid)?;
    if let Some(installed) = installed {
        *on_stop = OnStop::Direct(installed);
    }
    let listeners = config
        .listen
        .iter()
        .map(|&addr| bind(addr).with_context(|| format!("cannot listen on {addr}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bound = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<Vec<_>, _>>()
        .context("reading the bound addresses")?;
    let admin = AdminSocket::bind(config, &bound)?;
    let mut kernel = crate::attribution::open(&config.attribution)?;
    // A build without eBPF support refuses eBPF mode in the config.
    #[cfg(feature = "ebpf")]
    if config.host.mode == HostMode::Ebpf {
        attach_redirect(config, kernel.as_mut(), &bound, &listeners, agent_uid)?;
    }
    let Some(target) = &mut target else {
        return Ok(Prepared {
            listeners,
            bound,
            admin,
            kernel,
        });
    };
    if let Some(kernel) = kernel.as_mut().filter(|k| k.redirect.is_some()) {
        kernel.exe = exe_source(target)?;
    }
    if let Some(docker) = &config.attribution.docker {
        // Watching Docker needs its socket's group.
        use std::os::unix::fs::MetadataExt as _;
        match std::fs::metadata(&docker.socket) {
            Ok(meta) => target.add_group(meta.gid()),
            Err(e) => {
                tracing::warn!(socket = %docker.socket.display(), error = %e, "cannot see Docker's socket; the watcher retries")
            }
        }
    }
    // The serving agent will not be able to remove its addresses: the
    // helper, forked now, will.
    if let OnStop::Direct(installed) = std::mem::replace(on_stop, OnStop::Nothing) {
        *on_stop = OnStop::Helper(StopHelper::spawn(installed, target)?);
    }
    if target.user.is_some() {
        admin.give_to(target.uid(), target.gid())?;
    }
    privs::drop_to(target)?;
    tracing::info!(status = privs::status(), "privileges dropped");
    Ok(Prepared {
        listeners,
        bound,
        admin,
        kernel,
    })
}

/// eBPF mode: attaches the programs (in the privileged phase) and hands
/// their records to attribution. They detach when the agent exits.
#[cfg(feature = "ebpf")]
fn attach_redirect(
    config: &Config,
    kernel: Option<&mut Kernel>,
    bound: &[SocketAddr],
    listeners: &[std::net::TcpListener],
    agent_uid: u32,
) -> anyhow::Result<()> {
    // The config makes eBPF mode imply cgroup attribution and a listener.
    let kernel = kernel.context("eBPF mode needs attribution.cgroups = true")?;
    let listener = listeners.first().context("eBPF mode needs a listener")?;
    let redirect = crate::net::redirect(&config.host, &kernel.root, bound, listener, agent_uid)?;
    kernel.redirect = Some(redirect);
    Ok(())
}

/// eBPF mode: who reads the executables `exe =` rules ask for. With
/// CAP_SYS_PTRACE at hand, a helper that keeps it (and nothing else) can
/// read any process's; otherwise the agent reads them itself, once it is
/// `target`, and sees only its own user's processes.
fn exe_source(target: &Target) -> anyhow::Result<Arc<crate::attribution::exe::ExeSource>> {
    use crate::attribution::exe::{ExeHelper, ExeSource};
    let may_trace = caps::has_cap(
        None,
        caps::CapSet::Permitted,
        caps::Capability::CAP_SYS_PTRACE,
    )
    .unwrap_or(false);
    if !may_trace {
        tracing::warn!(
            "no CAP_SYS_PTRACE: `exe` rules match only the agent's own user's processes"
        );
        return Ok(Arc::default());
    }
    Ok(Arc::new(ExeSource::Helper(ExeHelper::spawn(target)?)))
}

/// Sets up, binds every listen address of `config`, calls `on_listening`
/// with the bound addresses (port 0 resolved) and the `/manage` page's
/// address, then serves until SIGTERM or
/// SIGINT, and undoes the address at the end. `carried` is what systemd's
/// store handed the process at its start (`fdstore::take`, in `main`).
pub fn run(
    config: Config,
    source: Source,
    carried: crate::fdstore::Taken,
    on_listening: impl FnOnce(&[SocketAddr], Option<&str>),
) -> anyhow::Result<()> {
    let mut on_stop = OnStop::Nothing;
    let notifier = Notifier::from_env();
    for problem in &carried.problems {
        tracing::warn!("{problem}");
    }
    let carried = carried.bytes;
    if let (Some(notifier), Some(_)) = (&notifier, &carried) {
        crate::fdstore::forget(notifier, crate::fdstore::CREDENTIALS);
    }
    let served = privileged_phase(&config, &mut on_stop).and_then(|prepared| {
        serve_phase(&config, source, prepared, notifier, carried, on_listening)
    });
    on_stop.run();
    served?;
    tracing::info!("stopped");
    Ok(())
}

fn serve_phase(
    config: &Config,
    source: Source,
    prepared: Prepared,
    notifier: Option<Notifier>,
    carried: Option<Vec<u8>>,
    on_listening: impl FnOnce(&[SocketAddr], Option<&str>),
) -> anyhow::Result<()> {
    let Prepared {
        listeners,
        bound,
        admin,
        kernel,
    } = prepared;
    // The runtime starts only now: privileges are dropped per thread, so
    // that had to happen while there was one.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads)
        .thread_name("imds-worker")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = runtime.block_on(async {
        let agent = build(
            config,
            Arc::new(SystemClock::new()),
            kernel,
            carried.as_deref(),
        )?;
        drop(carried);
        let engine = agent.engine.clone();
        let reloader = Arc::new(Reloader::new(
            source,
            config,
            Arc::clone(&agent.state.imds),
            agent.rules_nudge.clone(),
        ));
        Arc::clone(&reloader).reload_on_hangup();
        let backend = Backend {
            reloader: Some(reloader),
            ..agent.backend()
        };
        let admin = admin.serve(config, &bound, backend)?;
        if config.desktop
            && let Some(engine) = &agent.engine
        {
            crate::desktop::start(engine, admin.manage_url());
        }
        let options = ServeOptions {
            max_connections: config.max_connections,
            per_workload: config.max_connections_per_workload,
            per_owner: config.max_connections.div_ceil(4),
            original_dst: config.host.mode == HostMode::Dnat,
            ..ServeOptions::default()
        };
        for addr in &bound {
            tracing::info!(
                %addr,
                host_mode = config.host.mode.as_str(),
                http_tokens = config.settings.http_tokens.as_str(),
                hop_limit = config.settings.hop_limit,
                "listening"
            );
        }
        on_listening(&bound, admin.manage_url());
        let notifier = notifier.map(Arc::new);
        if let Some(notifier) = &notifier {
            notifier.ready(&status_line(config, &bound, &agent));
            tokio::spawn(tell_systemd(
                Arc::clone(notifier),
                config.clone(),
                bound.clone(),
                agent.clone(),
            ));
        }
        let stop = async {
            shutdown_signal().await;
            if let Some(notifier) = &notifier {
                notifier.stopping();
            }
        };
        let identify = crate::http::identifier(Arc::clone(&agent.state.attribution));
        let served = serve(listeners, router(agent.state), identify, options, stop).await;
        if let (Some(notifier), Some(engine)) = (&notifier, &engine) {
            carry_over(notifier, engine);
        }
        drop(admin);
        served.map_err(anyhow::Error::from)
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    served
}

/// Hands the cached credentials to systemd's store for the next start.
fn carry_over(notifier: &Notifier, engine: &Engine) {
    let bytes = engine.carry();
    if bytes.is_empty() {
        // Nothing the next start could vouch for (bootstrap keys): an
        // empty file would only make it warn.
        tracing::info!(
            "no cached credentials to hand to systemd (bootstrap keys vouch for nothing at the next start)"
        );
        return;
    }
    match crate::fdstore::keep(notifier, crate::fdstore::CREDENTIALS, &bytes) {
        Ok(()) => tracing::info!(
            bytes = bytes.len(),
            "cached credentials handed to systemd for the next start"
        ),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cached credentials could not be handed to systemd: the next start fetches them again")
        }
    }
}

/// What `systemctl status` shows.
fn status_line(config: &Config, bound: &[SocketAddr], agent: &Agent) -> String {
    let addrs: Vec<String> = bound.iter().map(ToString::to_string).collect();
    let ready = agent.engine.as_ref().is_none_or(|engine| engine.is_ready());
    format!(
        "serving {} ({} mode); {} role rules; {} workloads seen; {} requests; credentials {}",
        addrs.join(", "),
        config.host.mode.as_str(),
        agent.assignments.rules().len(),
        agent.seen.len(),
        crate::metrics::global().requests_total(),
        if ready { "ready" } else { "not ready" },
    )
}

/// Keeps systemd informed: watchdog pings (proof the runtime runs) at the
/// rate `WatchdogSec=` asks, and a fresh status line every 30 s.
async fn tell_systemd(
    notifier: Arc<Notifier>,
    config: Config,
    bound: Vec<SocketAddr>,
    agent: Agent,
) {
    let watchdog = crate::notify::watchdog_interval();
    let tick = watchdog
        .unwrap_or(Duration::from_secs(30))
        .min(Duration::from_secs(30));
    let mut every = tokio::time::interval(tick);
    let mut last_status = tokio::time::Instant::now();
    loop {
        every.tick().await;
        if watchdog.is_some() {
            notifier.watchdog();
        }
        if last_status.elapsed() >= Duration::from_secs(30) {
            notifier.status(&status_line(&config, &bound, &agent));
            last_status = tokio::time::Instant::now();
        }
    }
}

/// Completes on SIGTERM (systemd's stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
