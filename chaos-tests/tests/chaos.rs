//! Chaos scenarios against a cluster of three (or four) nodes behind a router, each for a bounded time while
//! register and ingest clients run. After each, the cluster is healed and must converge, every
//! acknowledged point must be readable, and every key's history must be linearizable.
//!
//! The scenarios run one at a time (they share two cores); each prints a `chaos-report` line.

use std::time::Duration;

use quiver_chaos_tests::cluster::{move_shard_once, ChaosCluster};
use quiver_chaos_tests::linearizability::check_all;
use quiver_chaos_tests::workload::{
    failover_ms, missing, throughput, Setup, Workload, INGEST, REGISTERS,
};

const SHARDS: usize = 2;
/// How long the faults go on in each scenario.
const CHAOS: Duration = Duration::from_secs(25);

/// One scenario at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Run {
    cluster: ChaosCluster,
    workload: Workload,
    started: u128,
    /// (time, shard) of each fault aimed at a shard's leader.
    faults: Vec<(u128, usize)>,
    /// How long each replica move took (those not interrupted).
    moves_ms: Vec<f64>,
    /// Moves whose meta leader was killed under them, then finished by running them again.
    interrupted_moves: usize,
}

/// `nodes` nodes (collections of 2 shards × 3 replicas) and the clients, running.
async fn start(nodes: usize) -> Run {
    let cluster = ChaosCluster::start(nodes).await;
    cluster.create_collection(REGISTERS, 2, SHARDS as u32).await;
    cluster.create_collection(INGEST, 2, SHARDS as u32).await;
    let workload = Workload::start(Setup {
        router: cluster.router.trim_start_matches("http://").to_string(),
        register_clients: 4,
        ingest_clients: 2,
        keys: 8,
        shards: SHARDS,
    });
    // Let the clients get going before the first fault.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = workload.recorder.now();
    Run {
        cluster,
        workload,
        started,
        faults: Vec::new(),
        moves_ms: Vec::new(),
        interrupted_moves: 0,
    }
}

impl Run {
    fn now(&self) -> u128 {
        self.workload.recorder.now()
    }

    fn elapsed(&self) -> Duration {
        Duration::from_nanos((self.now() - self.started) as u64)
    }

    /// The leader of `shard` of the register collection, waiting for one to be known.
    async fn leader_of(&self, shard: usize) -> usize {
        self.leader_in(REGISTERS, shard).await
    }

    /// The leader (node index) of the meta group, waiting for one to be known.
    async fn meta_leader(&self) -> usize {
        for _ in 0..100 {
            if let Some(leader) = self.cluster.meta_leader().await {
                return leader;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the meta group has no leader");
    }

    /// The leader (node index) of `shard` of `collection`, waiting for one to be known.
    async fn leader_in(&self, collection: &str, shard: usize) -> usize {
        for _ in 0..100 {
            if let Some(leader) = self.cluster.shard_leader(collection, shard).await {
                return leader;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("shard {shard} has no leader");
    }

    /// Stops the clients, heals the cluster and checks everything; prints the report.
    async fn finish(mut self, scenario: &str) {
        let ended = self.now();
        self.workload.stop().await;
        self.cluster.heal();
        self.cluster.wait_converged(Duration::from_secs(90)).await;
        let acked = self.workload.acked.lock().expect("acked").clone();
        let router = self
            .cluster
            .router
            .trim_start_matches("http://")
            .to_string();
        let lost = missing(&router, &acked).await;
        assert!(
            lost.is_empty(),
            "{scenario}: {} of {} acknowledged points lost, e.g. {:?}",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(10)]
        );
        let history = self.workload.recorder.history();
        if let Err(violation) = check_all(&history) {
            panic!("{scenario}: {violation}");
        }
        let writes = self.workload.writes();
        let (writes_per_s, points_per_s) = throughput(&writes, self.started, ended);
        let failovers = failover_ms(&writes, &self.faults);
        let ops = history.len();
        eprintln!(
            "chaos-report {}",
            serde_json::json!({
                "scenario": scenario,
                "seconds": (ended - self.started) as f64 / 1e9,
                "register_ops": ops,
                "acked_points": acked.len(),
                "writes_per_s": writes_per_s.round(),
                "points_per_s": points_per_s.round(),
                "failover_ms": failovers.iter().map(|f| f.round()).collect::<Vec<_>>(),
                "moves_ms": self.moves_ms.iter().map(|m| m.round()).collect::<Vec<_>>(),
                "interrupted_moves": self.interrupted_moves,
            })
        );
        assert!(ops > 100, "{scenario}: only {ops} register operations ran");
    }
}

/// kill -9 the leader of a shard every few seconds (alternating shards) and bring it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_shard_leaders() {
    let _one = SERIAL.lock().await;
    let mut run = start(3).await;
    let mut round = 0;
    while run.elapsed() < CHAOS {
        let shard = round % SHARDS;
        let leader = run.leader_of(shard).await;
        run.cluster.kill9(leader);
        run.faults.push((run.now(), shard));
        tokio::time::sleep(Duration::from_secs(2)).await;
        run.cluster.restart(leader);
        tokio::time::sleep(Duration::from_secs(3)).await;
        round += 1;
    }
    run.finish("kill-shard-leaders").await;
}

/// Cut a shard leader off from the other nodes (both directions), then heal: the majority keeps
/// accepting writes meanwhile and the minority catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_a_minority() {
    let _one = SERIAL.lock().await;
    let mut run = start(3).await;
    let mut round = 0;
    while run.elapsed() < CHAOS {
        let shard = round % SHARDS;
        let leader = run.leader_of(shard).await;
        run.cluster.isolate(leader);
        let cut = run.now();
        run.faults.push((cut, shard));
        tokio::time::sleep(Duration::from_secs(8)).await;
        let during = run
            .workload
            .writes()
            .iter()
            .filter(|w| w.ok && w.shard == Some(shard) && w.invoked > cut)
            .count();
        assert!(
            during > 0,
            "the majority accepted no write to shard {shard} while node {} was cut off",
            leader + 1
        );
        run.cluster.heal();
        tokio::time::sleep(Duration::from_secs(4)).await;
        round += 1;
    }
    run.finish("partition-a-minority").await;
}

/// SIGSTOP a shard leader for a few seconds, then SIGCONT: a paused leader that wakes up must
/// not serve stale reads or lose writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_shard_leaders() {
    let _one = SERIAL.lock().await;
    let mut run = start(3).await;
    let mut round = 0;
    while run.elapsed() < CHAOS {
        let shard = round % SHARDS;
        let leader = run.leader_of(shard).await;
        run.cluster.pause(leader);
        run.faults.push((run.now(), shard));
        tokio::time::sleep(Duration::from_secs(4)).await;
        run.cluster.resume(leader);
        tokio::time::sleep(Duration::from_secs(3)).await;
        round += 1;
    }
    run.finish("pause-shard-leaders").await;
}

/// Wipe a node's data directory mid-run and restart it: it catches up by snapshot (the logs
/// behind each snapshot are dropped after 50 entries); then kill -9 every node at once and
/// restart them all: nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wipe_a_node_then_kill_every_node() {
    let _one = SERIAL.lock().await;
    let mut run = start(3).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let follower = (run.leader_of(0).await + 1) % 3;
    run.cluster.wipe(follower);
    tokio::time::sleep(Duration::from_secs(5)).await;
    run.cluster.restart(follower);
    run.cluster.wait_converged(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    for i in 0..3 {
        run.cluster.kill9(i);
    }
    run.faults.push((run.now(), 0));
    run.faults.push((run.now(), 1));
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..3 {
        run.cluster.restart(i);
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    run.finish("wipe-then-kill-all").await;
}

/// Move shard replicas between four nodes while the clients write, alternating collections and
/// shards, half of the moves off the shard's leader (its group elects another) and half off a
/// follower; every fourth move has the meta leader running it killed (-9) part-way, and is run
/// again. The new replica joins as a learner, catches up and becomes a voter; the old one is
/// removed. Every move must finish, and nothing acknowledged may be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_replicas_under_load() {
    let _one = SERIAL.lock().await;
    let mut run = start(4).await;
    let mut round = 0;
    while run.elapsed() < CHAOS {
        let collection = [REGISTERS, INGEST][round % 2];
        let shard = (round / 2) % SHARDS;
        let (group, replicas) = run.cluster.placement(collection, shard).await;
        let leader = run.leader_in(collection, shard).await as u64 + 1;
        let from = match round % 4 < 2 {
            true => leader,
            false => *replicas.iter().find(|r| **r != leader).expect("a follower"),
        };
        let to = (1..=4)
            .find(|n| !replicas.contains(n))
            .expect("a node without a replica");
        if from == leader && collection == REGISTERS {
            run.faults.push((run.now(), shard));
        }
        if round % 4 == 3 {
            // kill -9 the meta leader, which runs the move, while the move is under way; then
            // run the move again, as an operator would, until it is done
            let meta = run.meta_leader().await;
            let router = run.cluster.router.clone();
            let first =
                tokio::spawn(async move { move_shard_once(&router, group, from, to).await });
            tokio::time::sleep(Duration::from_millis(25 * (round as u64 % 8))).await;
            run.cluster.kill9(meta);
            let _ = first.await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            run.cluster.restart(meta);
            run.interrupted_moves += 1;
            run.cluster
                .move_shard(group, from, to, Duration::from_secs(60))
                .await;
        } else {
            let took = run
                .cluster
                .move_shard(group, from, to, Duration::from_secs(60))
                .await;
            run.moves_ms.push(took.as_secs_f64() * 1e3);
        }
        let (_, now) = run.cluster.placement(collection, shard).await;
        assert!(
            now.contains(&to) && !now.contains(&from) && now.len() == 3,
            "group {group} after moving {from} to {to}: {now:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        round += 1;
    }
    run.finish("move-replicas-under-load").await;
}
