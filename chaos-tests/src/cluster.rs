//! The nemesis harness: a cluster of real `quiver serve` processes and a `quiver router` on
//! loopback, with faults injected from the test.
//!
//! Every node-to-node link `i → j` goes through a proxy of its own (`cluster.peer_routes` points
//! node `i` at it), so cutting both directions between a node and the rest is a symmetric
//! partition. Clients reach the router, and the router reaches nodes, directly.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use quiver_node::testing::{stable_loopback_address, FaultProxy};
use quiver_proto::v1 as pb;
use quiver_proto::v1::cluster_client::ClusterClient;
use quiver_proto::v1::collections_client::CollectionsClient;
use tonic::transport::Channel;

/// The `quiver` binary: `$QUIVER_BIN`, or the one built next to this test
/// (`target/<profile>/quiver`; `cargo test --workspace` builds it).
pub fn quiver_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("QUIVER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .join("quiver");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p quiver-cli` (or set QUIVER_BIN)",
        bin.display()
    );
    bin
}

/// A child process, killed on drop; its stderr is drained by a thread.
struct Process {
    child: Child,
    stopped: bool,
}

impl Process {
    /// Starts `quiver <args>` and waits for the line with the address it serves on.
    fn spawn(args: &[&str], log: &Path) -> (Self, String) {
        let mut child = Command::new(quiver_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("RUST_BACKTRACE", "0")
            .spawn()
            .expect("spawn quiver");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let log_path = log.to_path_buf();
        let log = log.to_path_buf();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .ok();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = file.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if let Some(rest) = line.split("listen=").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
            }
        });
        let mut process = Self {
            child,
            stopped: false,
        };
        let address = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                process.kill9();
                let logged = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = logged.lines().rev().take(20).collect();
                panic!(
                    "quiver {args:?} did not report its address in time; its last lines:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            });
        (process, address)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} failed");
    }

    fn kill9(&mut self) {
        if self.stopped {
            self.signal("-CONT");
            self.stopped = false;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Replicas of each shard of the scenarios' collections.
pub const REPLICATION: u32 = 3;

/// A cluster of `n` nodes (ids 1..=n) and a router.
pub struct ChaosCluster {
    pub dir: tempfile::TempDir,
    /// Each node's own listening address (fixed across restarts).
    pub addresses: Vec<String>,
    nodes: Vec<Option<Process>>,
    /// Link `i → j` (node indexes) and its proxy.
    links: BTreeMap<(usize, usize), FaultProxy>,
    _router: Process,
    /// The router's gRPC endpoint, `http://ip:port`.
    pub router: String,
}

impl ChaosCluster {
    /// Starts `n` nodes, forms them into one cluster and starts a router that knows them all.
    pub async fn start(n: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // Ports are picked once, so a restarted node is found where the membership says; below
        // the ephemeral range, so no connection takes one while its node is down.
        let addresses: Vec<String> = (0..n).map(|_| stable_loopback_address()).collect();
        let mut links = BTreeMap::new();
        for i in 0..n {
            for (j, to) in addresses.iter().enumerate() {
                if i != j {
                    let proxy = FaultProxy::must_start().await;
                    proxy.forward_to(to.parse().expect("address"));
                    links.insert((i, j), proxy);
                }
            }
        }
        for (i, listen) in addresses.iter().enumerate() {
            let routes: Vec<String> = (0..n)
                .filter(|j| *j != i)
                .map(|j| format!("{:?} = \"{}\"", addresses[j], links[&(i, j)].addr))
                .collect();
            std::fs::write(
                dir.path().join(format!("node{}.toml", i + 1)),
                format!(
                    "[node]\ndata_dir = {:?}\nlisten = {listen:?}\n\n[storage]\nsync_writes = true\nindex_build_threads = 1\nsegment_idle_seal_ms = 0\n\n\
                     [cluster]\nnode_id = {}\nbootstrap = false\nwrite_timeout_ms = 3000\n\
                     snapshot_every_entries = 200\nlog_entries_kept = 50\npeer_routes = {{ {} }}\n",
                    dir.path().join(format!("data{}", i + 1)),
                    i + 1,
                    routes.join(", ")
                ),
            )
            .expect("write config");
        }
        let nodes = (0..n).map(|i| Some(spawn_node(dir.path(), i))).collect();
        let mut first = ClusterClient::new(channel(&addresses[0]));
        first.init(pb::InitRequest {}).await.expect("cluster init");
        for address in &addresses[1..] {
            first
                .add_node(pb::AddNodeRequest {
                    address: address.clone(),
                })
                .await
                .expect("add node");
        }
        let (router, address) = Process::spawn(
            &[
                "router",
                "--join",
                &addresses.join(","),
                "--listen",
                "127.0.0.1:0",
            ],
            &dir.path().join("router.log"),
        );
        Self {
            nodes,
            links,
            addresses,
            _router: router,
            router: format!("http://{address}"),
            dir,
        }
    }

    /// Creates a collection through the router.
    pub async fn create_collection(&self, name: &str, dim: u32, shards: u32) {
        CollectionsClient::new(channel(self.router.trim_start_matches("http://")))
            .create(pb::CreateCollectionRequest {
                name: name.into(),
                dim,
                metric: pb::Metric::L2 as i32,
                index: Some(pb::IndexConfig {
                    kind: Some(pb::index_config::Kind::Flat(pb::FlatConfig {})),
                }),
                shard_count: Some(shards),
                replication_factor: Some(REPLICATION),
                ..Default::default()
            })
            .await
            .expect("create collection");
    }

    /// The group of shard `shard` of `collection` and the ids of the nodes holding its replicas,
    /// as the meta leader has them (asked through the router).
    pub async fn placement(&self, collection: &str, shard: usize) -> (u64, Vec<u64>) {
        let info = CollectionsClient::new(channel(self.router.trim_start_matches("http://")))
            .get(pb::GetCollectionRequest {
                name: collection.into(),
            })
            .await
            .expect("collection info")
            .into_inner();
        let shard = &info.shards[shard];
        (shard.group, shard.replicas.iter().map(|r| r.node).collect())
    }

    /// Moves `group`'s replica on node `from` to node `to` (node ids) through the router, and
    /// returns how long it took. A move that fails part-way leaves both replicas in the map, and
    /// is run again until it finishes or `within` has passed.
    pub async fn move_shard(&self, group: u64, from: u64, to: u64, within: Duration) -> Duration {
        let started = tokio::time::Instant::now();
        loop {
            match move_shard_once(&self.router, group, from, to).await {
                Ok(_) => return started.elapsed(),
                Err(e) if started.elapsed() < within => {
                    eprintln!("move of group {group} from {from} to {to} failed, again: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    self.print_logs();
                    panic!("moving group {group} from {from} to {to} never finished: {e}");
                }
            }
        }
    }

    /// The node (index) leading the meta group, as [`shard_leader`](Self::shard_leader) finds a
    /// shard's.
    pub async fn meta_leader(&self) -> Option<usize> {
        self.group_leader(|g| g.group == 0).await
    }

    /// The node leading shard `shard` of `collection`: of the leaders the live nodes report,
    /// the one in the highest term (a restarted node may still claim its old term's lead).
    pub async fn shard_leader(&self, collection: &str, shard: usize) -> Option<usize> {
        self.group_leader(|g| g.collection == collection && g.shard as usize == shard)
            .await
    }

    /// The node (index) leading the group `is` picks: of the leaders the live nodes report, the
    /// one in the highest term.
    async fn group_leader(&self, is: impl Fn(&pb::GroupStatus) -> bool) -> Option<usize> {
        let mut best: Option<(u64, u64)> = None;
        for (i, address) in self.addresses.iter().enumerate() {
            if self.nodes[i].as_ref().is_none_or(|p| p.stopped) {
                continue;
            }
            let status = tokio::time::timeout(
                Duration::from_secs(2),
                ClusterClient::new(channel(address)).status(pb::StatusRequest {}),
            )
            .await;
            let Ok(Ok(status)) = status else { continue };
            for g in status.into_inner().groups {
                if is(&g) && g.leader != 0 {
                    best = best.max(Some((g.term, g.leader)));
                }
            }
        }
        best.map(|(_, leader)| leader as usize - 1)
    }

    /// kill -9 node `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].take() {
            p.kill9();
        }
    }

    /// Starts node `i` again (after a kill or a wipe) with its configuration.
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].is_none() {
            self.nodes[i] = Some(spawn_node(self.dir.path(), i));
        }
    }

    /// kill -9 node `i` and delete its data directory.
    pub fn wipe(&mut self, i: usize) {
        self.kill9(i);
        let data = self.dir.path().join(format!("data{}", i + 1));
        let _ = std::fs::remove_dir_all(data);
    }

    /// SIGSTOP node `i`: it stays connected but does nothing.
    pub fn pause(&mut self, i: usize) {
        if let Some(p) = self.nodes[i].as_mut() {
            p.signal("-STOP");
            p.stopped = true;
        }
    }

    /// SIGCONT node `i`.
    pub fn resume(&mut self, i: usize) {
        if let Some(p) = self.nodes[i].as_mut() {
            if p.stopped {
                p.signal("-CONT");
                p.stopped = false;
            }
        }
    }

    /// Cuts every link between node `i` and the others, both ways.
    pub fn isolate(&self, i: usize) {
        for ((from, to), proxy) in &self.links {
            if *from == i || *to == i {
                proxy.cut();
            }
        }
    }

    /// Restores every link, resumes paused nodes and restarts stopped ones.
    pub fn heal(&mut self) {
        for proxy in self.links.values() {
            proxy.heal();
        }
        for i in 0..self.nodes.len() {
            self.resume(i);
            self.restart(i);
        }
    }

    /// Waits until every replica of every group has applied at least what the group's furthest
    /// replica had logged when the wait began (clients may keep writing meanwhile): every node
    /// has caught up to that point. Every group must be reported by [`REPLICATION`] nodes at
    /// least (more while a moved-away replica is being removed).
    pub async fn wait_converged(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let mut targets: Option<BTreeMap<u64, u64>> = None;
        loop {
            let mut heads: BTreeMap<u64, u64> = BTreeMap::new();
            let mut applied: Vec<(String, u64, u64)> = Vec::new();
            let mut answered = 0;
            for address in &self.addresses {
                let status = tokio::time::timeout(
                    Duration::from_secs(2),
                    ClusterClient::new(channel(address)).status(pb::StatusRequest {}),
                )
                .await;
                if let Ok(Ok(status)) = status {
                    answered += 1;
                    for g in status.into_inner().groups {
                        let head = heads.entry(g.group).or_default();
                        *head = (*head).max(g.last_log_index);
                        applied.push((address.clone(), g.group, g.last_applied_index));
                    }
                }
            }
            if targets.is_none() && answered == self.addresses.len() {
                targets = Some(heads);
            }
            if let Some(targets) = &targets {
                let behind: Vec<&(String, u64, u64)> = applied
                    .iter()
                    .filter(|(_, g, a)| *a < targets.get(g).copied().unwrap_or(0))
                    .collect();
                let replicated = targets.keys().all(|g| {
                    applied.iter().filter(|(_, group, _)| group == g).count()
                        >= (REPLICATION as usize).min(self.addresses.len())
                });
                if answered == self.addresses.len() && behind.is_empty() && replicated {
                    return;
                }
                if tokio::time::Instant::now() >= deadline {
                    self.print_logs();
                    panic!(
                        "the cluster did not converge: {answered} nodes answered; targets \
                         {targets:?}; (node, group, applied) behind: {behind:?}"
                    );
                }
            } else if tokio::time::Instant::now() >= deadline {
                self.print_logs();
                panic!("not every node answered: {answered} did");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl ChaosCluster {
    /// Prints the warnings and errors each node logged (for a failing test).
    pub fn print_logs(&self) {
        for i in 0..self.addresses.len() {
            let log = self.dir.path().join(format!("node{}.log", i + 1));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("panicked"))
                .collect();
            eprintln!(
                "--- node {} ({} warnings and errors; the first panics and the last 40):",
                i + 1,
                lines.len()
            );
            for line in text.lines().filter(|l| l.contains("panicked at")).take(3) {
                eprintln!("{line}");
            }
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// Starts node `i` from its configuration in `dir` (logs append to `node<i+1>.log`).
fn spawn_node(dir: &Path, i: usize) -> Process {
    let config = dir.join(format!("node{}.toml", i + 1));
    let log = dir.join(format!("node{}.log", i + 1));
    Process::spawn(
        &["serve", "--config", config.to_str().expect("utf-8")],
        &log,
    )
    .0
}

/// A lazily connected channel to `address` (`ip:port`).
/// One `MoveShard` call through the router at `router` (`http://ip:port`).
pub async fn move_shard_once(
    router: &str,
    group: u64,
    from: u64,
    to: u64,
) -> Result<pb::MoveShardResponse, tonic::Status> {
    ClusterClient::new(channel(router.trim_start_matches("http://")))
        .move_shard(pb::MoveShardRequest { group, from, to })
        .await
        .map(|r| r.into_inner())
}

pub fn channel(address: &str) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .expect("address")
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy()
}
