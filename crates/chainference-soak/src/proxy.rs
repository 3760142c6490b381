//! A TCP proxy the soak owns between every client, server and gateway and the validator, so it
//! can break their connections on cue: cut every connection and refuse new ones for a while
//! (a lost websocket, an RPC node that refuses), or delay every chunk (an RPC node answering
//! slowly). It forwards bytes and knows nothing of HTTP or websockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// Close every open connection and every new one at once (accepted, then closed: callers
    /// see the connection end, as behind a load balancer, rather than ECONNREFUSED).
    Refuse,
    /// Forward, waiting this long before each chunk read (up to 16 KiB) in either direction.
    Slow(Duration),
}

/// A running proxy; it stops when dropped.
pub struct FaultProxy {
    /// Where clients connect.
    pub listen: SocketAddr,
    mode: watch::Sender<(Mode, u64)>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free local port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let listen = listener.local_addr()?;
        let (mode, watcher) = watch::channel((Mode::Pass, 0u64));
        let watcher = Arc::new(watcher);
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let watcher = watch::Receiver::clone(&watcher);
                tokio::spawn(forward(inbound, target, watcher));
            }
        });
        Ok(FaultProxy { listen, mode, task })
    }

    /// Switches the mode; `Refuse` also closes every connection open now.
    pub fn set(&self, mode: Mode) {
        self.mode.send_modify(|(current, generation)| {
            *current = mode;
            if mode == Mode::Refuse {
                *generation = generation.wrapping_add(1);
            }
        });
    }

    /// `mode` for `duration`, then back to passing traffic.
    pub async fn for_a_while(&self, mode: Mode, duration: Duration) {
        self.set(mode);
        tokio::time::sleep(duration).await;
        self.set(Mode::Pass);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.set(Mode::Refuse);
    }
}

async fn forward(inbound: TcpStream, target: SocketAddr, mut mode: watch::Receiver<(Mode, u64)>) {
    let (now, generation) = *mode.borrow_and_update();
    if now == Mode::Refuse {
        return; // dropped: the caller sees the connection closed
    }
    let Ok(outbound) = TcpStream::connect(target).await else { return };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (mut in_read, mut in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    let up = pump(&mut in_read, &mut out_write, mode.clone());
    let down = pump(&mut out_read, &mut in_write, mode.clone());
    let cut = async {
        // Ends when a later Refuse bumps the generation (or the proxy is gone).
        while mode.changed().await.is_ok() {
            if mode.borrow().1 != generation {
                return;
            }
        }
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        () = cut => {}
    }
}

/// Copies `from` to `to` until either side closes, delaying each chunk while the mode is slow.
async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    mode: watch::Receiver<(Mode, u64)>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let current = mode.borrow().0;
        if let Mode::Slow(delay) = current {
            tokio::time::sleep(delay).await;
        }
        let Some(chunk) = buffer.get(..read) else { break };
        if to.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::{FaultProxy, Mode};
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// An echo server: what it reads it writes back.
    async fn echo() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 || socket.write_all(buffer.get(..n).unwrap_or_default()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(socket: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        socket.write_all(b"ping").await?;
        let mut back = [0u8; 4];
        socket.read_exact(&mut back).await?;
        Ok(back.to_vec())
    }

    #[tokio::test]
    async fn passes_cuts_refuses_and_slows() {
        let proxy = FaultProxy::start(echo().await).await.expect("proxy");
        let mut open = TcpStream::connect(proxy.listen).await.expect("connect");
        assert_eq!(round_trip(&mut open).await.expect("pass"), b"ping");

        proxy.set(Mode::Refuse);
        // The open connection is cut, and a new one is closed at once.
        assert!(round_trip(&mut open).await.is_err(), "an open connection survived a cut");
        let mut refused = TcpStream::connect(proxy.listen).await.expect("the listener still accepts");
        assert!(round_trip(&mut refused).await.is_err(), "a new connection was served while refusing");

        proxy.set(Mode::Slow(Duration::from_millis(150)));
        let mut slow = TcpStream::connect(proxy.listen).await.expect("connect");
        let start = Instant::now();
        assert_eq!(round_trip(&mut slow).await.expect("slow"), b"ping");
        assert!(start.elapsed() >= Duration::from_millis(300), "both directions are delayed");

        proxy.set(Mode::Pass);
        let mut again = TcpStream::connect(proxy.listen).await.expect("connect");
        assert_eq!(round_trip(&mut again).await.expect("pass again"), b"ping");
    }
}
