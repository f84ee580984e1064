//! Test support: a whole server (node and front) on an ephemeral loopback port, in-process,
//! stopped on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use quiver_config::Config;
use quiver_node::Node;
use quiver_proto::v1::collections_client::CollectionsClient;
use quiver_proto::v1::points_client::PointsClient;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// A node serving on 127.0.0.1 with its data in a directory that outlives restarts.
pub struct TestServer {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Where the REST API listens.
    pub rest_addr: SocketAddr,
    /// The node, for tests that look beneath the API.
    pub node: std::sync::Arc<Node>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<quiver_core::Result<()>>>,
}

/// A configuration for tests: data in `data_dir`, an ephemeral port.
pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config::default();
    config.node.data_dir = data_dir.to_path_buf();
    config.node.listen = "127.0.0.1:0".parse().expect("loopback address");
    config.storage.sync_writes = false;
    // small segments, so tests of a few thousand points exercise sealed ones too
    config.storage.segment_seal_points = 500;
    // (no sealing on idleness: what tests see indexed depends on what they wrote only)
    config.storage.segment_idle_seal_ms = 0;
    config
}

impl TestServer {
    /// Starts a node with `config` (its `listen` is ignored: an ephemeral port is used).
    pub async fn must_start(config: Config) -> Self {
        let mut config = config;
        let data_dir = config.node.data_dir.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        config.cluster.advertise = addr.to_string();
        let node = Node::open(config).await.expect("open node");
        let (tx, rx) = oneshot::channel();
        let rest = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let rest_addr = rest.local_addr().expect("local addr");
        let task = tokio::spawn(crate::serve(node.clone(), listener, Some(rest), async {
            let _ = rx.await;
        }));
        Self {
            addr,
            data_dir,
            rest_addr,
            node,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn must_channel(&self) -> Channel {
        Channel::from_shared(self.endpoint())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect")
    }

    pub async fn must_collections(&self) -> CollectionsClient<Channel> {
        CollectionsClient::new(self.must_channel().await)
    }

    /// Waits (up to 60 s) until no local replica of `collection` has optimizer work running: its
    /// points are then indexed, but for fewer than `storage.segment_seal_points` per shard.
    pub async fn settle(&self, collection: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let busy = self
                .node
                .shards()
                .iter()
                .any(|shard| shard.collection(collection).is_ok_and(|c| c.optimizing()));
            if !busy {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the optimizer of `{collection}` did not settle"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub async fn must_points(&self) -> PointsClient<Channel> {
        PointsClient::new(self.must_channel().await).max_decoding_message_size(usize::MAX)
    }

    /// Stops serving and releases the data directory.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server result");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
