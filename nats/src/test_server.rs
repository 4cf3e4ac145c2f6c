//! A real nats-server with JetStream, started on a free port with a store directory
//! of its own and stopped (the store removed) when dropped: for tests of every crate
//! that talks to NATS. The binary is `NATS_SERVER_BIN` (which `make test` sets to
//! the one it installs) or `nats-server` on the `PATH`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    process: Child,
    store: PathBuf,
    url: String,
}

impl NatsServer {
    /// Starts a server and waits until it accepts connections.
    ///
    /// # Panics
    /// When the binary cannot be started or does not listen within 10 s: a test
    /// cannot go on without its server.
    pub fn start() -> Self {
        let binary = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".to_owned());
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free port");
        let store = std::env::temp_dir().join(format!("orders-nats-{}-{port}", std::process::id()));
        let process = Command::new(&binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("starting {binary} (set NATS_SERVER_BIN; `make test` does): {error}")
            });
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nats-server did not listen on port {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            process,
            store,
            url: format!("nats://127.0.0.1:{port}"),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
