//! A real nats-server with JetStream, started on a free port with a store directory
//! of its own and stopped (the store removed) when dropped: for tests of every crate
//! that talks to NATS. The binary is `NATS_SERVER_BIN` (which `make test` sets to
//! the one it installs) or `nats-server` on the `PATH`.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Numbers the store directories of the servers one process starts.
static STORES: AtomicUsize = AtomicUsize::new(0);

pub struct NatsServer {
    process: Child,
    store: PathBuf,
    url: String,
    binary: String,
}

/// Starts `binary` with JetStream on `port` (`-1`: one it picks) and `store`, and
/// waits until it listens; returns the process and its address.
fn spawn(binary: &str, port: &str, store: &PathBuf) -> (Child, String) {
    let mut process = Command::new(binary)
        .args(["-js", "-a", "127.0.0.1", "-p", port, "-sd"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!("starting {binary} (set NATS_SERVER_BIN; `make test` does): {error}")
        });
    let (port_found, address) = std::sync::mpsc::channel();
    let log = process.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        let mut port_found = Some(port_found);
        for line in BufReader::new(log).lines().map_while(Result::ok) {
            if let Some(address) = line.split("Listening for client connections on ").nth(1) {
                if let Some(sender) = port_found.take() {
                    let _ = sender.send(address.trim().to_owned());
                }
            }
            // Keep reading, so the server never blocks on a full pipe.
        }
    });
    let address = address
        .recv_timeout(Duration::from_secs(10))
        .expect("nats-server did not start listening within 10 s");
    (process, address)
}

impl NatsServer {
    /// Starts a server and waits until it listens.
    ///
    /// # Panics
    /// When the binary cannot be started or does not listen within 10 s: a test
    /// cannot go on without its server.
    pub fn start() -> Self {
        let binary = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".to_owned());
        let store = std::env::temp_dir().join(format!(
            "orders-nats-{}-{}",
            std::process::id(),
            STORES.fetch_add(1, Ordering::SeqCst)
        ));
        // `-p -1`: the server picks a free port itself and logs it. (Picking one here
        // and passing it would race with other tests doing the same, and a test
        // could end up talking to another test's server.)
        let (process, address) = spawn(&binary, "-1", &store);
        Self {
            process,
            store,
            url: format!("nats://{address}"),
            binary,
        }
    }

    /// Kills the server with SIGKILL (no shutdown, no flush) and starts it again on
    /// the same port with the same store, as after a crash.
    pub fn kill_and_restart(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let port = self
            .url
            .rsplit(':')
            .next()
            .expect("the URL has a port")
            .to_owned();
        let (process, _) = spawn(&self.binary, &port, &self.store);
        self.process = process;
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
