//! Process lifecycle: listeners, one monoio runtime per worker thread (io_uring preferred, epoll
//! fallback), the admin thread, and draining shutdown.
//!
//! Owns the threads and the order things start and stop in. Listener sockets are created here,
//! before any worker starts, so a port that another process already serves is refused at
//! start-up instead of being silently shared through SO_REUSEPORT. Workers never share a
//! listener: each gets its own socket on the same port and the kernel spreads connections.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use futures_channel::oneshot;

use crate::admin::AdminHandler;
use crate::api::ApiHandler;
use crate::clock::Clock;
use crate::config::{AccessLogFormat, Config, SANDBOX_UPSTREAM};
use crate::http::listener::{bind_reuseport_group, run_on_runtime, serve_listener};
use crate::http::server::ServerLimits;
use crate::ids::NODE_TAG_LEN;
use crate::limits::{WORKERS_START_POLL_MS, WORKERS_START_TIMEOUT_MS};
use crate::metrics::Metrics;
use crate::openai::models::{Backend, ModelEntry, Registry};
use crate::payments::{PaymentSecrets, PaymentsHandler};
use crate::shared::{Maintenance, Shared};
use crate::store::{Store, StoreConnections};
use crate::worker::Worker;

/// A running gateway: its addresses, shared state and threads.
pub struct Gateway {
    pub client_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The payments listener, when the configuration has a `[payments]` section.
    pub payments_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    stop_senders: Vec<oneshot::Sender<()>>,
}

/// The store `[store]` asks for. Redis is connected (functions loaded, subscriber started) but
/// need not be up: the gateway starts degraded and recovers when it answers.
pub fn build_store(config: &Config, clock: &Clock) -> io::Result<Store> {
    use crate::config::StoreConfig;
    use crate::store::redis::{RedisStore, RedisStoreSettings, resolve};
    let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
    let options = &config.store_options;
    let env_password = match &options.password_env {
        Some(name) => {
            Some(std::env::var(name).map_err(|_| invalid(format!("[store] password_env: {name} is not set")))?)
        }
        None => None,
    };
    let (nodes, cluster, url_password) = match &config.store {
        StoreConfig::Embedded => return Ok(Store::embedded(config.limits.clone())),
        StoreConfig::Redis { url } => {
            let (addr, password) = RedisStoreSettings::from_url(url).map_err(invalid)?;
            (vec![addr], false, password)
        }
        StoreConfig::RedisCluster { nodes } => {
            let addrs = nodes.iter().map(|node| resolve(node)).collect::<Result<Vec<_>, _>>().map_err(invalid)?;
            (addrs, true, None)
        }
    };
    let settings = RedisStoreSettings {
        nodes,
        cluster,
        password: env_password.or(url_password),
        prefix: options.key_prefix.clone(),
        command_timeout: std::time::Duration::from_millis(options.command_timeout_ms),
        caller_clock: matches!(clock, Clock::Manual(_)),
    };
    Ok(Store::Redis(RedisStore::connect(settings, config.limits.clone())))
}

/// How many workers `workers = 0` means on this machine.
pub fn default_worker_count() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

impl Gateway {
    /// Binds the listeners and starts every thread. Returns once all workers accept.
    pub fn start(config: Config, admin_token: String, clock: Clock) -> io::Result<Gateway> {
        let secrets = PaymentSecrets::from_env(&config);
        Gateway::start_with_payment_secrets(config, admin_token, clock, secrets)
    }

    /// `start` with the payment secrets given rather than read from the environment (tests).
    pub fn start_with_payment_secrets(
        config: Config,
        admin_token: String,
        clock: Clock,
        payment_secrets: PaymentSecrets,
    ) -> io::Result<Gateway> {
        let workers = match config.server.workers {
            0 => default_worker_count(),
            n => n,
        }
        .min(crate::limits::MAX_WORKERS);
        assert_within_limits(&config);
        crate::errors::catalog();
        let client_listeners = bind_reuseport_group(config.server.listen, workers)?;
        let client_addr = client_listeners[0].local_addr()?;
        let admin_listener = bind_reuseport_group(config.server.admin_listen, 1)?.remove(0);
        let admin_addr = admin_listener.local_addr()?;
        let payments_listener = match &config.payments {
            Some(payments) => Some(bind_reuseport_group(payments.listen, 1)?.remove(0)),
            None => None,
        };
        let payments_addr = payments_listener.as_ref().map(|listener| listener.local_addr()).transpose()?;

        let store = build_store(&config, &clock)?;
        let registry = registry_of(&config);
        let upstreams = crate::backend::upstream::build(&config.upstreams)?;
        let mpesa = match (config.payments.as_ref().and_then(|p| p.mpesa.as_ref()), &payment_secrets.mpesa) {
            (Some(mpesa), Some(secrets)) => Some(crate::backend::daraja::Daraja::new(mpesa, secrets)?),
            _ => None,
        };
        let mut node_tag = [0u8; NODE_TAG_LEN];
        node_tag.copy_from_slice(crate::ids::random_base62(NODE_TAG_LEN).as_bytes());
        let server_limits = server_limits_of(&config);
        let task_work = config.server.io_uring_task_work;
        let client_tls = match &config.server.tls {
            Some(files) => Some(crate::tls::server_acceptor(&files.cert_file, &files.key_file)?),
            None => None,
        };
        let cors = crate::http::cors::Cors::new(&config.server.cors_origins);
        let model_ids = config.models.iter().map(|model| model.id.clone()).collect();
        let metrics = Metrics::with_models(workers, model_ids);
        // One JSON line per request on standard output, written off the workers.
        let mut access_logs: Vec<Option<crate::access_log::WorkerAccessLog>> = match config.access_log {
            AccessLogFormat::Json => {
                let dropped = metrics.access_log_dropped_lines.clone();
                crate::access_log::start(workers, std::io::stdout(), dropped)?.into_iter().map(Some).collect()
            }
            AccessLogFormat::Off => (0..workers).map(|_| None).collect(),
        };
        let shared = Arc::new(Shared {
            cors,
            config,
            store,
            registry,
            upstreams,
            mpesa,
            metrics,
            admin_token,
            clock,
            maintenance: Maintenance::default(),
            node_tag,
            draining: Default::default(),
            workers_running: Default::default(),
            workers_ended: Default::default(),
        });

        let mut threads = Vec::new();
        let mut stop_senders = Vec::new();
        for (index, listener) in client_listeners.into_iter().enumerate() {
            let (stop_sender, stop_receiver) = oneshot::channel();
            stop_senders.push(stop_sender);
            let shared = shared.clone();
            let tls = client_tls.clone();
            let access_log = access_logs.get_mut(index).and_then(Option::take);
            let thread = std::thread::Builder::new().name(format!("fikra-worker-{index}")).spawn(move || {
                let metrics = shared.metrics.workers[index].clone();
                let handler = Rc::new(ApiHandler { worker: Worker::new(index, shared.clone(), access_log) });
                let lifecycle = shared.lifecycle();
                run_on_runtime(&metrics, &format!("worker {index}"), task_work, || async {
                    let leases = handler.clone();
                    monoio::spawn(async move { leases.worker.run_leases().await });
                    let (stop_sweep, sweep_stopped) = oneshot::channel();
                    let sweeper = handler.clone();
                    monoio::spawn(async move { sweeper.worker.run_pool_sweep(sweep_stopped).await });
                    let (stop_voids, voids_stopped) = oneshot::channel();
                    let voider = handler.clone();
                    let voids_done = monoio::spawn(async move { voider.worker.run_voids(voids_stopped).await });
                    serve_listener(
                        listener,
                        handler.clone(),
                        metrics.clone(),
                        server_limits,
                        stop_receiver,
                        lifecycle,
                        tls,
                    )
                    .await;
                    // Drained: nothing is in flight, so every lease can be ended.
                    handler.worker.stop_leases().await;
                    handler.worker.flush_access_log();
                    let _ = stop_sweep.send(());
                    let _ = stop_voids.send(());
                    voids_done.await;
                });
                shared.workers_ended.fetch_add(1, Ordering::AcqRel);
            })?;
            threads.push(thread);
        }
        let (stop_sender, stop_receiver) = oneshot::channel();
        stop_senders.push(stop_sender);
        let admin_shared = shared.clone();
        threads.push(std::thread::Builder::new().name("fikra-admin".into()).spawn(move || {
            let metrics = admin_shared.metrics.admin.clone();
            let handler = Rc::new(AdminHandler::new(admin_shared.clone()));
            run_on_runtime(&metrics, "admin", task_work, || async {
                monoio::spawn(reap_holds_forever(admin_shared.clone()));
                monoio::spawn(sync_key_directory_forever(admin_shared.clone()));
                let beat = monoio::spawn(beat_until_workers_end(admin_shared.clone()));
                let lifecycle = admin_shared.lifecycle();
                serve_listener(
                    admin_listener,
                    handler.clone(),
                    metrics.clone(),
                    server_limits,
                    stop_receiver,
                    lifecycle,
                    None,
                )
                .await;
                // The heartbeat lasts until the workers have ended (then it is removed).
                beat.await;
            });
        })?);

        if let Some(listener) = payments_listener {
            let (stop_sender, stop_receiver) = oneshot::channel();
            stop_senders.push(stop_sender);
            let payments_shared = shared.clone();
            threads.push(std::thread::Builder::new().name("fikra-payments".into()).spawn(move || {
                let metrics = payments_shared.metrics.payments.listener.clone();
                let handler = Rc::new(PaymentsHandler::new(payments_shared.clone(), payment_secrets));
                // Its own count of running loops: readiness and start-up count the client
                // workers and the admin listener only.
                let lifecycle = crate::http::listener::Lifecycle {
                    running: Default::default(),
                    drain_deadline_ms: payments_shared.config.server.shutdown_deadline_ms,
                };
                if let Some(addr) = payments_addr {
                    crate::log_info!("payments listener on {addr}");
                }
                run_on_runtime(&metrics, "payments", task_work, || async {
                    serve_listener(listener, handler, metrics.clone(), server_limits, stop_receiver, lifecycle, None)
                        .await;
                });
            })?);
        }

        let gateway = Gateway { client_addr, admin_addr, payments_addr, shared, threads, stop_senders };
        let started_ms = crate::clock::monotonic_ms();
        while gateway.shared.workers_running.load(Ordering::Acquire) < workers + 1 {
            if crate::clock::monotonic_ms() - started_ms > WORKERS_START_TIMEOUT_MS {
                return Err(io::Error::other("workers did not start within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(WORKERS_START_POLL_MS));
        }
        Ok(gateway)
    }

    /// Stops accepting, lets in-flight requests finish (up to the configured deadline), and
    /// joins every thread.
    pub fn shutdown(mut self) {
        self.shared.draining.store(true, Ordering::Relaxed);
        for sender in self.stop_senders.drain(..) {
            let _ = sender.send(());
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The model registry a config describes.
pub fn registry_of(config: &Config) -> Registry {
    let entries = config
        .models
        .iter()
        .map(|model| ModelEntry {
            id: model.id.clone(),
            backend: if model.upstream == SANDBOX_UPSTREAM {
                Backend::Sandbox
            } else {
                Backend::Upstream(model.upstream.clone())
            },
            upstream_model: model.upstream_model.clone(),
            input_price: model.input_price,
            cached_input_price: model.cached_input_price,
            output_price: model.output_price,
            max_output_tokens: model.max_output_tokens,
            max_image_input_tokens: model.max_image_input_tokens,
            max_audio_input_tokens: model.max_audio_input_tokens,
            unsupported_parameters: model.unsupported_parameters.clone(),
            created_unix_s: model.created,
            tokenizer: model.tokenizer.clone(),
        })
        .collect();
    Registry::new(entries)
}

/// Configuration may lower a bound of `limits`, never raise it, and `config` refuses a value above
/// one. A value above one here is a bug in the validator (or a `Config` built by hand): the
/// process must not start and serve with it.
fn assert_within_limits(config: &Config) {
    use crate::limits::*;
    let server = &config.server;
    assert!(server.workers <= MAX_WORKERS, "workers {} > {MAX_WORKERS}", server.workers);
    assert!(server.max_head_bytes <= MAX_REQUEST_HEAD_BYTES, "max_head_bytes {}", server.max_head_bytes);
    assert!(server.max_body_bytes <= MAX_REQUEST_BODY_BYTES, "max_body_bytes {}", server.max_body_bytes);
    assert!(server.head_timeout_ms <= HEAD_READ_TIMEOUT_MS, "head_timeout_ms {}", server.head_timeout_ms);
    assert!(server.body_timeout_ms <= BODY_READ_TIMEOUT_MS, "body_timeout_ms {}", server.body_timeout_ms);
    assert!(
        server.keepalive_timeout_ms <= KEEPALIVE_IDLE_TIMEOUT_MS,
        "keepalive_timeout_ms {}",
        server.keepalive_timeout_ms
    );
    assert!(
        server.shutdown_deadline_ms <= SHUTDOWN_DRAIN_DEADLINE_MS,
        "shutdown_deadline_ms {}",
        server.shutdown_deadline_ms
    );
    let store = &config.store_options;
    assert!(
        store.command_timeout_ms <= MAX_REDIS_COMMAND_TIMEOUT_MS,
        "command_timeout_ms {}",
        store.command_timeout_ms
    );
    assert!((1..=MAX_GATEWAY_NODES).contains(&store.gateway_nodes), "gateway_nodes {}", store.gateway_nodes);
    assert!(store.node_dead_after_ms <= MAX_NODE_DEAD_AFTER_MS, "node_dead_after_ms {}", store.node_dead_after_ms);
    assert!(
        store.node_beat_interval_ms <= MAX_NODE_BEAT_INTERVAL_MS
            && 2 * store.node_beat_interval_ms <= store.node_dead_after_ms,
        "node_beat_interval_ms {}",
        store.node_beat_interval_ms
    );
    assert!(store.reaper_interval_ms <= HOLD_REAPER_INTERVAL_MS, "reaper_interval_ms {}", store.reaper_interval_ms);
    for upstream in &config.upstreams {
        assert!(upstream.connect_timeout_ms <= MAX_UPSTREAM_CONNECT_TIMEOUT_MS, "upstream {}", upstream.name);
        assert!(upstream.response_timeout_ms <= MAX_UPSTREAM_RESPONSE_TIMEOUT_MS, "upstream {}", upstream.name);
    }
    for model in &config.models {
        assert!(model.max_output_tokens <= MAX_MODEL_OUTPUT_TOKENS, "model {}", model.id);
    }
    assert!(config.sandbox.output_tokens <= SANDBOX_MAX_OUTPUT_TOKENS, "sandbox output_tokens");
}

/// The server limits a config asks for.
pub fn server_limits_of(config: &Config) -> ServerLimits {
    let server = &config.server;
    ServerLimits {
        max_head_bytes: server.max_head_bytes,
        max_body_bytes: server.max_body_bytes,
        head_timeout_ms: server.head_timeout_ms,
        body_timeout_ms: server.body_timeout_ms,
        keepalive_timeout_ms: server.keepalive_timeout_ms,
        write_timeout_ms: crate::limits::RESPONSE_WRITE_TIMEOUT_MS,
    }
}

/// Keeps this node's key directory whole: a full read at start-up, then one per interval (the
/// channels carry changes in between; this repairs whatever a lost message missed).
async fn sync_key_directory_forever(shared: Arc<Shared>) {
    let connections = StoreConnections::default();
    let store = shared.store.client(&connections);
    let mut last_read_ms: Option<u64> = None;
    loop {
        let now_ms = crate::clock::monotonic_ms();
        let due =
            last_read_ms.is_none_or(|at| now_ms.saturating_sub(at) >= crate::limits::KEY_DIRECTORY_SYNC_INTERVAL_MS);
        // A new subscription (or none yet) makes the directory untrusted until it is read again.
        if due || store.key_directory_needs_sync() {
            match store.sync_key_directory().await {
                Ok(_) => last_read_ms = Some(now_ms),
                Err(error) => crate::log_warn_every!("the key directory could not be read from the store: {error}"),
            }
        }
        monoio::time::sleep(Duration::from_millis(crate::limits::KEY_DIRECTORY_CHECK_INTERVAL_MS)).await;
    }
}

/// Releases holds nobody will settle: past their TTL (a lost connection, a bug), or taken by a
/// node whose heartbeat stopped (it died) before it was presumed dead. Runs on every node, at
/// `[store] reaper_interval_ms`; several nodes reaping the same hold is harmless (one wins).
async fn reap_holds_forever(shared: Arc<Shared>) {
    let connections = StoreConnections::default();
    let options = &shared.config.store_options;
    let own_tag = node_tag_text(&shared);
    loop {
        monoio::time::sleep(Duration::from_millis(options.reaper_interval_ms)).await;
        let store = shared.store.client(&connections);
        let now_ms = shared.clock.now_ms();
        // Only read who stopped beating (the heartbeat task beats); this node is never one.
        let mut dead = match store.heartbeat("", options.node_dead_after_ms, false, now_ms).await {
            Ok(dead) => dead,
            Err(error) => {
                crate::log_warn_every!("the reaper could not read which gateway nodes are alive: {error}");
                Vec::new()
            }
        };
        dead.retain(|node| *node.tag != *own_tag);
        match store.reap_holds(now_ms, &dead, options.node_dead_after_ms).await {
            Ok(reaped) => {
                if reaped.expired > 0 {
                    crate::log_info!("the reaper released {} expired holds", reaped.expired);
                }
                if reaped.of_dead_nodes > 0 {
                    let tags: Vec<&str> = dead.iter().map(|node| &*node.tag).collect();
                    crate::log_warn_every!(
                        "the reaper released {} holds of gateway nodes presumed dead (no heartbeat for {} ms): {tags:?}",
                        reaped.of_dead_nodes,
                        options.node_dead_after_ms
                    );
                }
            }
            // Every reaper interval while the store is down: rate-bounded.
            Err(error) => crate::log_warn_every!("the reaper could not release holds: {error}"),
        }
    }
}

/// This node's tag as text (base62, so always UTF-8).
fn node_tag_text(shared: &Shared) -> String {
    String::from_utf8_lossy(&shared.node_tag).into_owned()
}

/// Renews this node's heartbeat every `[store] node_beat_interval_ms` until every worker has
/// drained and ended its leases (a draining node is alive: its in-flight holds are its own),
/// then removes it, so a clean shutdown is never taken for a death. Shared store only.
async fn beat_until_workers_end(shared: Arc<Shared>) {
    if !shared.store.client(&StoreConnections::default()).is_shared() {
        return;
    }
    let connections = StoreConnections::default();
    let options = &shared.config.store_options;
    let tag = node_tag_text(&shared);
    let interval = Duration::from_millis(options.node_beat_interval_ms);
    // A worker that never reports its end (it died) must not keep the process alive: the beat
    // stops at the latest when the drain and the leases' end are past their deadlines.
    let mut draining_since_ms = None;
    let longest_stop_ms = shared.config.server.shutdown_deadline_ms + crate::limits::LEASE_END_DEADLINE_MS;
    while shared.workers_ended.load(Ordering::Acquire) < shared.workers_expected() {
        if shared.is_draining() {
            let since = *draining_since_ms.get_or_insert_with(crate::clock::monotonic_ms);
            if crate::clock::monotonic_ms().saturating_sub(since) > longest_stop_ms {
                break;
            }
        }
        let store = shared.store.client(&connections);
        if let Err(error) = store.heartbeat(&tag, options.node_dead_after_ms, false, shared.clock.now_ms()).await {
            crate::log_warn_every!(
                "gateway node {tag}: heartbeat failed ({error}); after {} ms other nodes release this node's holds",
                options.node_dead_after_ms
            );
        }
        monoio::time::sleep(interval).await;
    }
    let store = shared.store.client(&connections);
    match store.heartbeat(&tag, options.node_dead_after_ms, true, shared.clock.now_ms()).await {
        Ok(_) => crate::log_info!("gateway node {tag}: heartbeat removed (clean shutdown)"),
        Err(error) => crate::log_warn!("gateway node {tag}: could not remove its heartbeat ({error}); it ages out"),
    }
}
