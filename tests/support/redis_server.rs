//! Real `redis-server` processes for tests: a standalone server, or a 3-master Redis Cluster
//! created with `redis-cli --cluster create`, and `redis-cli` readers of what Redis counted.
//! Each server dies with the test process. A server is only handed out once its own process
//! is the one listening on its port (a concurrent test may have taken the port first).

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::wait::{wait_for, wait_until};

/// How long a `redis-server` may take to listen after it was spawned.
pub const STARTED_WITHIN: Duration = Duration::from_secs(10);
/// How long a new Redis Cluster may take to report `cluster_state:ok` on every node.
pub const CLUSTER_OK_WITHIN: Duration = Duration::from_secs(20);

/// A redis-server this test owns; killed on drop.
pub struct RedisServer {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl RedisServer {
    /// Starts `redis-server` on a free port with `extra` arguments, in its own directory.
    pub fn start(extra: &[&str]) -> RedisServer {
        RedisServer::start_on(free_port_pair(), extra)
    }

    /// Starts on `port`, or on another free one if a concurrent test took `port` first.
    pub fn start_on(mut port: u16, extra: &[&str]) -> RedisServer {
        loop {
            let dir = std::env::temp_dir().join(format!("fikra-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let mut child = spawn_redis(port, &dir, extra);
            if listening_or_exited(&mut child, port) {
                return RedisServer { child, port, dir };
            }
            let _ = std::fs::remove_dir_all(&dir);
            port = free_port_pair();
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its process id (to stop it with SIGSTOP, as a stalled server).
    pub fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and directory (its persistence files included).
    pub fn restart(&mut self, extra: &[&str]) {
        self.kill();
        self.child = spawn_redis(self.port, &self.dir, extra);
        assert!(listening_or_exited(&mut self.child, self.port), "port {} was taken while Redis was down", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_redis(port: u16, dir: &std::path::Path, extra: &[&str]) -> Child {
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--dir"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child when the
    // thread that started it exits, so no redis-server outlives the tests.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command.spawn().expect("redis-server is installed (tests/run-all.sh installs it)")
}

/// Waits until `child` listens on `port` (true) or has exited (false: a server on a taken port
/// exits at once). Whoever else answers on the port does not count.
fn listening_or_exited(child: &mut Child, port: u16) -> bool {
    let pid = child.id();
    wait_for(STARTED_WITHIN, || {
        if child.try_wait().ok().flatten().is_some() {
            return Some(false);
        }
        listens_on(pid, port).then_some(true)
    })
    .unwrap_or_else(|| panic!("redis-server on {port} did not start within {STARTED_WITHIN:?}"))
}

/// Whether process `pid` owns the socket listening on 127.0.0.1:`port`: the listener's inode
/// in `/proc/net/tcp` is one of the process's open files.
fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else { return false };
    let local = format!("0100007F:{port:04X}");
    const LISTEN: &str = "0A";
    let sockets: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() > 9 && fields[1] == local && fields[3] == LISTEN).then(|| format!("socket:[{}]", fields[9]))
        })
        .collect();
    let Ok(files) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    files
        .filter_map(Result::ok)
        .filter_map(|file| std::fs::read_link(file.path()).ok())
        .any(|target| sockets.iter().any(|socket| target.as_os_str() == socket.as_str()))
}

/// A free port whose cluster bus port (+10000) is free too.
pub fn free_port_pair() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Runs `redis-cli` with `args` and returns its standard output.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let output =
        Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().expect("redis-cli is installed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The account hash `acct`'s balance and held amount (nano-USD): since library 13 the last two
/// of the eight doubles packed in its field `b`.
pub fn wallet(port: u16, acct: &str) -> (u64, u64) {
    let unpack = "local n = { struct.unpack('<dddddddd', redis.call('HGET', KEYS[1], 'b')) } return { n[7], n[8] }";
    let text = redis_cli(port, &["EVAL", unpack, "1", acct]);
    let mut numbers = text.lines().map(|line| line.trim().parse::<u64>().unwrap_or_else(|_| panic!("{text}")));
    (numbers.next().unwrap_or_else(|| panic!("{text}")), numbers.next().unwrap_or_else(|| panic!("{text}")))
}

/// Adds `nanos` to what the account hash `acct` holds (in its field `b`, as `wallet` reads it): a hold written by hand.
pub fn wallet_hold(port: u16, acct: &str, nanos: u64) {
    let add = "local n = { struct.unpack('<dddddddd', redis.call('HGET', KEYS[1], 'b')) } \
        redis.call('HSET', KEYS[1], 'b', struct.pack('<dddddddd', n[1], n[2], n[3], n[4], n[5], n[6], n[7], \
        n[8] + tonumber(ARGV[1])))";
    redis_cli(port, &["EVAL", add, "1", acct, &nanos.to_string()]);
}

/// Sum of `calls=` over every command in `INFO commandstats`, and the `FCALL` calls alone.
pub fn command_calls(port: u16) -> (u64, u64) {
    let stats = redis_cli(port, &["INFO", "commandstats"]);
    let mut total = 0;
    let mut fcall = 0;
    for line in stats.lines() {
        let Some((name, rest)) = line.split_once(':') else { continue };
        let Some(calls) = rest.strip_prefix("calls=").and_then(|r| r.split(',').next()) else { continue };
        let calls: u64 = calls.parse().unwrap_or(0);
        total += calls;
        if name == "cmdstat_fcall" || name == "cmdstat_fcall_ro" {
            fcall += calls;
        }
    }
    (total, fcall)
}

/// A 3-master Redis Cluster.
pub struct RedisCluster {
    pub servers: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let servers: Vec<RedisServer> = (0..3)
            .map(|_| {
                let port = free_port_pair();
                RedisServer::start_on(
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &format!("nodes-{port}.conf"),
                        "--appendonly",
                        "no",
                    ],
                )
            })
            .collect();
        let addresses: Vec<String> = servers.iter().map(|s| format!("127.0.0.1:{}", s.port)).collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli is installed");
        assert!(status.success(), "redis-cli --cluster create failed");
        let all_ok = || servers.iter().all(|s| redis_cli(s.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok"));
        assert!(wait_until(CLUSTER_OK_WITHIN, all_ok), "the cluster did not become ok within {CLUSTER_OK_WITHIN:?}");
        RedisCluster { servers }
    }

    pub fn seeds(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(RedisServer::addr).collect()
    }
}

/// One server and one cluster per test binary, started by a thread that never ends (so the
/// death signal only fires when the test process exits). Tests keep apart by key prefix.
pub fn shared_server() -> SocketAddr {
    static SERVER: OnceLock<SocketAddr> = OnceLock::new();
    *SERVER.get_or_init(|| start_forever(|| vec![RedisServer::start(&["--appendonly", "no"])])[0])
}

pub fn shared_cluster() -> Vec<SocketAddr> {
    static CLUSTER: OnceLock<Vec<SocketAddr>> = OnceLock::new();
    CLUSTER.get_or_init(|| start_forever(|| RedisCluster::start().servers)).clone()
}

fn start_forever(start: fn() -> Vec<RedisServer>) -> Vec<SocketAddr> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let servers = start();
        sender.send(servers.iter().map(RedisServer::addr).collect::<Vec<_>>()).unwrap();
        loop {
            std::thread::park();
        }
    });
    receiver.recv().expect("redis started")
}

/// A Redis store on `nodes` (a Cluster's seeds when `cluster`), keys under `prefix`, with the
/// reference limits unless `policy` says otherwise, on the caller's clock (tests drive `now_ms`).
pub fn redis_store(
    nodes: Vec<SocketAddr>,
    cluster: bool,
    prefix: &str,
    command_timeout: Duration,
    policy: fikra_gateway::store::LimitPolicy,
) -> fikra_gateway::store::Store {
    use fikra_gateway::store::{Store, redis};
    let settings = redis::RedisStoreSettings {
        nodes,
        cluster,
        password: None,
        prefix: prefix.to_string(),
        command_timeout,
        caller_clock: true,
    };
    Store::Redis(redis::RedisStore::connect(settings, policy))
}

/// A key prefix no other test uses.
pub fn unique_prefix(test: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("t{}-{test}-{n}", std::process::id())
}

/// The counters of one command in `INFO commandstats`. Redis 7 counts a command it executed in
/// `calls` and one it refused before running it (a `MOVED`, `ASK` or `TRYAGAIN` redirect, a
/// wrong arity...) in `rejected_calls`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandStat {
    pub calls: u64,
    pub rejected_calls: u64,
    pub failed_calls: u64,
}

/// `command`'s counters on the server at `port` (lower case, e.g. `"fcall"`); zero if it never ran.
pub fn command_stat(port: u16, command: &str) -> CommandStat {
    let stats = redis_cli(port, &["INFO", "commandstats"]);
    let wanted = format!("cmdstat_{command}:");
    let Some(line) = stats.lines().find_map(|line| line.strip_prefix(wanted.as_str())) else {
        return CommandStat::default();
    };
    let field = |name: &str| -> u64 {
        line.split(',')
            .find_map(|pair| pair.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
            .map_or(0, |value| value.trim().parse().unwrap())
    };
    CommandStat { calls: field("calls"), rejected_calls: field("rejected_calls"), failed_calls: field("failed_calls") }
}

/// How many error replies starting with `prefix` (`"TRYAGAIN"`, `"ASK"`, `"MOVED"`) the server
/// at `port` has sent, from `INFO errorstats`.
pub fn error_count(port: u16, prefix: &str) -> u64 {
    let stats = redis_cli(port, &["INFO", "errorstats"]);
    let wanted = format!("errorstat_{prefix}:count=");
    stats.lines().find_map(|line| line.strip_prefix(wanted.as_str())).map_or(0, |count| count.trim().parse().unwrap())
}

/// The Cluster node id of the server at `port`.
pub fn cluster_node_id(port: u16) -> String {
    let id = redis_cli(port, &["CLUSTER", "MYID"]).trim().to_string();
    assert_eq!(id.len(), 40, "CLUSTER MYID on {port} answered {id:?}");
    id
}

impl RedisCluster {
    /// The index in `servers` of the master that serves `slot`, as that master itself says
    /// (the slot ranges on its `myself` line of `CLUSTER NODES`).
    pub fn owner_of(&self, slot: u16) -> usize {
        let owners: Vec<usize> = (0..self.servers.len())
            .filter(|&index| {
                let nodes = redis_cli(self.servers[index].port, &["CLUSTER", "NODES"]);
                let line = nodes.lines().find(|line| line.contains("myself")).expect("a myself line");
                line.split(' ').skip(8).filter(|range| !range.starts_with('[')).any(|range| {
                    let (start, end) = range.split_once('-').unwrap_or((range, range));
                    (start.parse::<u16>().unwrap()..=end.parse::<u16>().unwrap()).contains(&slot)
                })
            })
            .collect();
        assert_eq!(owners.len(), 1, "slot {slot} has owners {owners:?}");
        owners[0]
    }
}
