//! Test support for cluster tests: a fault-injecting TCP proxy, and loopback addresses that stay
//! free while a node is down. (A whole server in-process is `quiver_server::testing`.)

use std::net::SocketAddr;
use std::sync::Arc;

/// A TCP proxy in front of a node for fault injection: peers reach the node through it (the
/// node advertises the proxy's address), and [`cut`](FaultProxy::cut) severs every connection
/// and refuses new ones until [`heal`](FaultProxy::heal). Kernel netem is not available here.
pub struct FaultProxy {
    pub addr: SocketAddr,
    target: Arc<parking_lot::Mutex<Option<SocketAddr>>>,
    cut: Arc<std::sync::atomic::AtomicBool>,
    links: Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on an ephemeral loopback port; set the target with [`forward_to`](Self::forward_to).
    pub async fn must_start() -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let target: Arc<parking_lot::Mutex<Option<SocketAddr>>> = Arc::default();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let links: Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (target, cut, links) = (target.clone(), cut.clone(), links.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let to = *target.lock();
                    // (checked under the lock `cut` takes, so no link slips past a cut)
                    let mut links = links.lock();
                    let (false, Some(to)) = (cut.load(Ordering::SeqCst), to) else {
                        continue; // dropped: the peer sees the connection close
                    };
                    let link = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    links.retain(|l| !l.is_finished());
                    links.push(link);
                }
            })
        };
        Self {
            addr,
            target,
            cut,
            links,
            accept,
        }
    }

    pub fn forward_to(&self, target: SocketAddr) {
        *self.target.lock() = Some(target);
    }

    /// Severs every open connection and refuses new ones.
    pub fn cut(&self) {
        let mut links = self.links.lock();
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for link in links.drain(..) {
            link.abort();
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for link in self.links.lock().drain(..) {
            link.abort();
        }
    }
}

/// A loopback address (`127.0.0.1:port`) on a port that is free now and lies below the
/// kernel's ephemeral range, for a process that will be restarted on the same address: the
/// kernel never gives such a port to an outgoing connection, so it is still free when the
/// process comes back. Successive calls in one process start their search at different ports.
pub fn stable_loopback_address() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(32_768);
    let (low, high) = (10_000u64, ephemeral_low.max(10_001));
    let span = high - low;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let start = (u64::from(std::process::id()) * 7_919 + nanos + call * 104_729) % span;
    for i in 0..span {
        let port = low + (start + i) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return format!("127.0.0.1:{port}");
        }
    }
    panic!("no free loopback port between {low} and {high}");
}
