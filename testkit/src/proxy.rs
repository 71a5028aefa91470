//! A TCP proxy a test can cut, to take a service away from the code under test mid-run.

use tokio::sync::oneshot;

/// Forwards connections from a local port to a target until [`TcpProxy::cut`] (or drop), which
/// closes every forwarded connection and stops accepting new ones.
#[derive(Debug)]
pub struct TcpProxy {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
}

impl TcpProxy {
    /// Starts forwarding `127.0.0.1:<port>` to `target` (`host:port`). Must be called inside a
    /// Tokio runtime.
    pub async fn start(target: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free local port");
        let port = listener.local_addr().expect("a bound port").port();
        let target = target.to_owned();
        let (stop, mut stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { break };
                        let target = target.clone();
                        conns.spawn(async move {
                            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            }
                        });
                    }
                }
            }
            conns.abort_all();
        });
        Self { port, stop: Some(stop) }
    }

    /// Forwards to the host and port of a `redis://host:port[/db]` URL.
    pub async fn redis(url: &str) -> Self {
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let host_port = rest.rsplit('@').next().unwrap_or(rest).split('/').next().unwrap_or(rest);
        Self::start(host_port).await
    }

    /// The local port that forwards.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every forwarded connection and refuses new ones.
    pub fn cut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}
