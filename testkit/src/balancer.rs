//! A TCP load balancer for tests of rolling restarts: it forwards each incoming connection to a
//! healthy upstream, round-robin, and tries the next one when a connect fails, as a load balancer
//! in front of server replicas does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// How long one health check or one connect to an upstream may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection waits for some upstream to accept it before it is dropped.
const PICK_DEADLINE: Duration = Duration::from_secs(10);

/// Forwards connections from a local port to upstreams until dropped.
///
/// An upstream is healthy while its health check (`GET <path>` over HTTP/1.1) answers 200; a
/// failed connect marks it unhealthy at once, until the next passing check. Each connection goes
/// to the next healthy upstream in turn; when its connect fails, to the next one. Only when none
/// is healthy are the others tried too. Nothing is ever retried once a connection is forwarded:
/// bytes sent to an upstream are never replayed elsewhere.
#[derive(Debug)]
pub struct LoadBalancer {
    port: u16,
    upstreams: Arc<Vec<Upstream>>,
    stop: Option<oneshot::Sender<()>>,
}

#[derive(Debug)]
struct Upstream {
    addr: SocketAddr,
    healthy: AtomicBool,
    forwarded: AtomicU64,
}

impl LoadBalancer {
    /// Starts forwarding `127.0.0.1:<port>` to `upstreams`, checking each with `GET health_path`
    /// every `interval`. Every upstream starts unhealthy until its first check passes. Must be
    /// called inside a Tokio runtime.
    pub async fn start(upstreams: &[SocketAddr], health_path: &str, interval: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free local port");
        let port = listener.local_addr().expect("a bound port").port();
        let upstreams: Arc<Vec<Upstream>> = Arc::new(
            upstreams
                .iter()
                .map(|&addr| Upstream { addr, healthy: AtomicBool::new(false), forwarded: AtomicU64::new(0) })
                .collect(),
        );
        let (stop, mut stopped) = oneshot::channel::<()>();
        let (ups, path) = (upstreams.clone(), health_path.to_owned());
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for index in 0..ups.len() {
                let (ups, path) = (ups.clone(), path.clone());
                tasks.spawn(async move {
                    loop {
                        let upstream = &ups[index];
                        upstream.healthy.store(passes_check(upstream.addr, &path).await, Ordering::Relaxed);
                        tokio::time::sleep(interval).await;
                    }
                });
            }
            let next = Arc::new(AtomicUsize::new(0));
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        let Ok((inbound, _)) = accepted else { break };
                        let (ups, next) = (ups.clone(), next.clone());
                        tasks.spawn(forward(inbound, ups, next));
                    }
                }
            }
            tasks.abort_all();
        });
        Self { port, upstreams, stop: Some(stop) }
    }

    /// The local port that forwards.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Whether `upstream` passed its last health check (and no connect to it failed since).
    pub fn is_healthy(&self, upstream: SocketAddr) -> bool {
        self.upstream(upstream).healthy.load(Ordering::Relaxed)
    }

    /// How many connections were forwarded to `upstream` so far.
    pub fn forwarded(&self, upstream: SocketAddr) -> u64 {
        self.upstream(upstream).forwarded.load(Ordering::Relaxed)
    }

    fn upstream(&self, addr: SocketAddr) -> &Upstream {
        self.upstreams.iter().find(|u| u.addr == addr).unwrap_or_else(|| panic!("{addr} is not an upstream"))
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Connects `inbound` to an upstream and copies both ways until both sides are done.
async fn forward(mut inbound: TcpStream, upstreams: Arc<Vec<Upstream>>, next: Arc<AtomicUsize>) {
    let deadline = Instant::now() + PICK_DEADLINE;
    let outbound = loop {
        if let Some(outbound) = pick(&upstreams, &next).await {
            break outbound;
        }
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut outbound = outbound;
    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
}

/// A connection to the next healthy upstream that accepts one; failing that, to any upstream.
async fn pick(upstreams: &[Upstream], next: &AtomicUsize) -> Option<TcpStream> {
    let start = next.fetch_add(1, Ordering::Relaxed);
    let order: Vec<&Upstream> = (0..upstreams.len()).map(|i| &upstreams[(start + i) % upstreams.len()]).collect();
    for healthy_only in [true, false] {
        for upstream in order.iter().filter(|u| !healthy_only || u.healthy.load(Ordering::Relaxed)) {
            match tokio::time::timeout(CHECK_TIMEOUT, TcpStream::connect(upstream.addr)).await {
                Ok(Ok(stream)) => {
                    upstream.forwarded.fetch_add(1, Ordering::Relaxed);
                    return Some(stream);
                }
                _ => upstream.healthy.store(false, Ordering::Relaxed),
            }
        }
    }
    None
}

/// Whether `GET path` on `addr` answers 200 within the check timeout.
async fn passes_check(addr: SocketAddr, path: &str) -> bool {
    let check = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<bool, std::io::Error>(head.starts_with(b"HTTP/1.1 200"))
    };
    matches!(tokio::time::timeout(CHECK_TIMEOUT, check).await, Ok(Ok(true)))
}
