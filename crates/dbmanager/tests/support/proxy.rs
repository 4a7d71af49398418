//! A fault-injecting TCP proxy placed between the library and a server: forward, cut every
//! connection, refuse new ones, add latency, or blackhole (bytes vanish, nothing answers).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    Forward,
    /// New connections are closed at once.
    Refuse,
    /// Data from either side is read and dropped.
    Blackhole,
    /// Every chunk is delayed.
    Latency(Duration),
}

struct State {
    fault: Mutex<Fault>,
    pumps: Mutex<Vec<JoinHandle<()>>>,
    upstream: SocketAddr,
}

pub struct FaultProxy {
    pub port: u16,
    state: Arc<State>,
    acceptor: JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(State {
            fault: Mutex::new(Fault::Forward),
            pumps: Mutex::new(Vec::new()),
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
        });
        let accept_state = state.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if accept_state.fault() == Fault::Refuse {
                    drop(client);
                    continue;
                }
                let pump_state = accept_state.clone();
                let pump = tokio::spawn(async move { pump_state.serve(client).await });
                accept_state.pumps.lock().unwrap().push(pump);
            }
        });
        Self {
            port,
            state,
            acceptor,
        }
    }

    pub fn set(&self, fault: Fault) {
        *self.state.fault.lock().unwrap() = fault;
    }

    /// Drops every proxied connection (both sockets close).
    pub fn cut_all(&self) {
        for pump in self.state.pumps.lock().unwrap().drain(..) {
            pump.abort();
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut_all();
    }
}

impl State {
    fn fault(&self) -> Fault {
        *self.fault.lock().unwrap()
    }

    async fn serve(self: Arc<Self>, client: TcpStream) {
        let Ok(server) = TcpStream::connect(self.upstream).await else {
            return;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let up = self.clone().pipe(client_read, server_write);
        let down = self.clone().pipe(server_read, client_write);
        tokio::select! {
            _ = up => {}
            _ = down => {}
        }
    }

    async fn pipe(
        self: Arc<Self>,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            match self.fault() {
                Fault::Blackhole => continue,
                Fault::Latency(d) => tokio::time::sleep(d).await,
                Fault::Forward | Fault::Refuse => {}
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
}
