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

/// A free TCP port on 127.0.0.1 (free when asked; a cluster's nodes must know each
/// other's ports before they start).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// A cluster of nats-servers with JetStream on this machine, for tests of what
/// happens when a node dies.
pub struct NatsCluster {
    binary: String,
    nodes: Vec<ClusterNode>,
}

struct ClusterNode {
    name: String,
    process: Option<Child>,
    store: PathBuf,
    port: u16,
    cluster_port: u16,
}

impl NatsCluster {
    /// Starts `size` nodes routed to each other and waits until each listens.
    /// JetStream needs a moment more to elect its meta leader: retry the first
    /// JetStream request (see `ensure_topology`).
    pub fn start(size: usize) -> Self {
        let binary = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".to_owned());
        let run = STORES.fetch_add(1, Ordering::SeqCst);
        let nodes: Vec<ClusterNode> = (0..size)
            .map(|index| ClusterNode {
                name: format!("node-{index}"),
                process: None,
                store: std::env::temp_dir().join(format!(
                    "orders-nats-{}-{run}-node-{index}",
                    std::process::id()
                )),
                port: free_port(),
                cluster_port: free_port(),
            })
            .collect();
        let mut cluster = Self { binary, nodes };
        for index in 0..size {
            cluster.start_node(index);
        }
        cluster
    }

    fn start_node(&mut self, index: usize) {
        let routes: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.cluster_port))
            .collect();
        let node = &mut self.nodes[index];
        let mut process = Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &node.port.to_string()])
            .args(["-n", &node.name, "--cluster_name", "orders-test"])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", node.cluster_port),
            ])
            .args(["--routes", &routes.join(",")])
            .arg("-sd")
            .arg(&node.store)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", self.binary));
        let (listening, listened) = std::sync::mpsc::channel();
        let log = process.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || {
            let mut listening = Some(listening);
            for line in BufReader::new(log).lines().map_while(Result::ok) {
                if line.contains("Listening for client connections on ") {
                    if let Some(sender) = listening.take() {
                        let _ = sender.send(());
                    }
                }
            }
        });
        listened
            .recv_timeout(Duration::from_secs(10))
            .expect("a cluster node did not start listening within 10 s");
        node.process = Some(process);
    }

    /// Every node's URL, comma-separated (as `ORDERS_NATS_URL` takes them).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills node `index` with SIGKILL.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut process) = self.nodes[index].process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts node `index` again on its store.
    pub fn restart(&mut self, index: usize) {
        self.kill(index);
        self.start_node(index);
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(index);
            let _ = std::fs::remove_dir_all(&self.nodes[index].store);
        }
    }
}
