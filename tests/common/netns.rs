//! Network namespaces for tests: a test host of its own (interfaces, addresses, routes,
//! iptables) that nothing else on the machine sees, so tests that program packet filters
//! or bridges run in parallel without touching the host.
//!
//! A `NetNs` is a named namespace (`ip netns add`, so `ip -n`/`iptables` inside can find it)
//! with `lo` up. It can grow veth pairs (to the host or to another `NetNs`), run processes
//! inside (`setns` in the child before exec), run a closure on a thread inside (sockets it
//! makes stay in the namespace), and relay the test API server into itself: a listener on
//! the namespace's own `127.0.0.1:<api port>` forwards to the host's, so the cluster's
//! kubeconfig and its TLS names work unchanged inside. Dropping it kills its processes,
//! stops the relays and deletes the namespace and the host ends of its veths, also when a
//! test panics.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Numbers namespaces made by this test process; with the pid it makes names unique
/// across parallel test binaries.
static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct NetNs {
    pub name: String,
    /// Short and unique: the stem of interface names (which the kernel caps at 15 bytes).
    tag: String,
    children: Mutex<Vec<Option<Child>>>,
    relays: Mutex<Vec<(Arc<AtomicBool>, JoinHandle<()>)>>,
    /// Host-side interfaces this namespace made (a veth's peer on the host).
    host_links: Mutex<Vec<String>>,
    veths: AtomicU32,
}

/// Run a command to completion; panics with its output when it fails (harness set-up).
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Enter the network namespace at `path` on the calling thread (or, in a `pre_exec`,
/// the child about to exec).
pub fn enter(path: &Path) -> std::io::Result<()> {
    let file = File::open(path)?;
    // SAFETY: setns on an open namespace file descriptor; it changes only this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl NetNs {
    /// A new namespace with `lo` up.
    pub fn new() -> NetNs {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{:x}x{n}", std::process::id());
        let ns = NetNs {
            name: format!("fk-{tag}"),
            tag,
            children: Mutex::default(),
            relays: Mutex::default(),
            host_links: Mutex::default(),
            veths: AtomicU32::new(0),
        };
        run("ip", &["netns", "add", &ns.name]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }

    /// `ip -n <ns> <args>`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Add an address (`10.1.2.3/32`) to the namespace's `lo`: a local address that
    /// listeners inside can bind to without any other interface.
    pub fn add_local_address(&self, cidr: &str) {
        self.ip(&["addr", "add", cidr, "dev", "lo"]);
    }

    /// A command that runs inside the namespace (and dies with the test process).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let path = self.path();
        // SAFETY: the closure runs in the forked child before exec; it only opens a file,
        // calls setns and prctl, and returns.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                enter(&path)
            });
        }
        cmd
    }

    /// Run a program inside to completion.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        self.command(program).args(args).output().unwrap_or_else(|e| panic!("running {program} in {}: {e}", self.name))
    }

    /// Run a program inside; it must succeed. Its standard output.
    pub fn exec_ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.exec(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} in {} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Spawn `cmd` (made with `command`) with its output appended to `log`; the namespace
    /// owns the child. The handle is for `kill`.
    pub fn spawn(&self, cmd: &mut Command, log: &Path) -> usize {
        let file = || std::fs::OpenOptions::new().create(true).append(true).open(log).expect("opening a log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file())
            .stderr(file())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?} in {}: {e}", cmd.get_program(), self.name));
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children.push(Some(child));
        children.len() - 1
    }

    /// Kill (SIGKILL) and reap a child started by `spawn`.
    pub fn kill(&self, handle: usize) {
        let child = self.children.lock().unwrap_or_else(|e| e.into_inner()).get_mut(handle).and_then(Option::take);
        if let Some(mut c) = child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether a child started by `spawn` is still running.
    pub fn alive(&self, handle: usize) -> bool {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children.get_mut(handle).and_then(Option::as_mut).is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Run `f` on a thread inside the namespace: its sockets live there.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(move || {
                enter(&path).expect("entering the test network namespace");
                f()
            })
            .join()
            .expect("a thread in the test network namespace panicked")
        })
    }

    fn next_veth(&self) -> (String, String) {
        let n = self.veths.fetch_add(1, Ordering::Relaxed);
        (format!("h{}v{n}", self.tag), format!("n{}v{n}", self.tag))
    }

    /// A veth pair between the host (`host_cidr` on its end) and this namespace
    /// (`ns_cidr`); both ends up. The interface names (host, namespace).
    pub fn veth_to_host(&self, host_cidr: &str, ns_cidr: &str) -> (String, String) {
        let (host, inner) = self.next_veth();
        run("ip", &["link", "add", &host, "type", "veth", "peer", "name", &inner, "netns", &self.name]);
        self.host_links.lock().unwrap_or_else(|e| e.into_inner()).push(host.clone());
        run("ip", &["addr", "add", host_cidr, "dev", &host]);
        run("ip", &["link", "set", &host, "up"]);
        self.ip(&["addr", "add", ns_cidr, "dev", &inner]);
        self.ip(&["link", "set", &inner, "up"]);
        (host, inner)
    }

    /// A veth pair between this namespace (`cidr`) and `other` (`other_cidr`); both ends
    /// up. The interface names (here, there). Deleting either namespace removes the pair.
    pub fn veth_to(&self, other: &NetNs, cidr: &str, other_cidr: &str) -> (String, String) {
        let (there, here) = self.next_veth();
        self.ip(&["link", "add", &here, "type", "veth", "peer", "name", &there, "netns", &other.name]);
        self.ip(&["addr", "add", cidr, "dev", &here]);
        self.ip(&["link", "set", &here, "up"]);
        other.ip(&["addr", "add", other_cidr, "dev", &there]);
        other.ip(&["link", "set", &there, "up"]);
        (here, there)
    }

    /// Listen on the namespace's 127.0.0.1:`port` and forward every connection to the
    /// host's 127.0.0.1:`port` (the test API server), until the namespace drops.
    pub fn relay_host_port(&self, port: u16) {
        let listener = self.run_in(|| TcpListener::bind(("127.0.0.1", port)).expect("binding the relay in the netns"));
        listener.set_nonblocking(true).expect("non-blocking relay listener");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let handle = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inside, _)) => forward(inside, port),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        self.relays.lock().unwrap_or_else(|e| e.into_inner()).push((stop, handle));
    }
}

impl Default for NetNs {
    fn default() -> Self {
        NetNs::new()
    }
}

/// Copy both ways between a connection accepted inside and a new one to the host's port.
fn forward(inside: TcpStream, port: u16) {
    let Ok(outside) = TcpStream::connect(("127.0.0.1", port)) else {
        let _ = inside.shutdown(Shutdown::Both);
        return;
    };
    let _ = inside.set_nonblocking(false);
    for (from, to) in [(&inside, &outside), (&outside, &inside)] {
        let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else { return };
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
            let _ = from.shutdown(Shutdown::Read);
        });
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let children: Vec<_> = self.children.lock().unwrap_or_else(|e| e.into_inner()).drain(..).flatten().collect();
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let relays: Vec<_> = self.relays.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        for (stop, handle) in relays {
            stop.store(true, Ordering::Relaxed);
            let _ = handle.join();
        }
        for link in self.host_links.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = Command::new("ip").args(["link", "del", &link]).stderr(Stdio::null()).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}
