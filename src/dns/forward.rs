//! Names outside the cluster go to `--upstream-nameservers`, as with CoreDNS's `forward`
//! plug-in: a query goes out over the transport it came in on; a UDP answer with TC set
//! is asked again over TCP (so the full answer can be cached and TCP-capable clients
//! get it); upstreams are tried in the policy's order, those that failed twice in a row
//! last (CoreDNS's `max_fails 2`), until one answers or the overall deadline passes. A
//! failing upstream is probed with `. IN NS` every 0.5 s until it answers anything, which
//! makes it healthy again (CoreDNS's health check). At most `--max-concurrent` queries
//! are out at once (kubeadm's Corefile sets `max_concurrent 1000`); beyond, REFUSED, so a
//! flood towards a dead upstream cannot pile up sockets and tasks.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::server::{HEADER_LEN, Transport};

/// How long one upstream gets to answer one exchange.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a forwarded query may take in all (CoreDNS's forward timeout), so a client
/// with the usual 5 s timeout hears SERVFAIL rather than nothing.
const DEADLINE: Duration = Duration::from_secs(5);
/// Consecutive failures after which an upstream is tried only after the others.
const MAX_FAILS: u32 = 2;
/// Idle UDP sockets kept per upstream.
const MAX_IDLE_SOCKETS: usize = 64;
/// How often a failing upstream is probed.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// The order upstreams are tried in (CoreDNS's `policy`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
pub enum Policy {
    /// A random order per query (CoreDNS's default), which spreads the load.
    #[default]
    Random,
    /// Each query starts at the next upstream.
    #[value(name = "round_robin")]
    RoundRobin,
    /// Always the listed order: the first is the primary.
    Sequential,
}

pub struct Upstream {
    pub addr: SocketAddr,
    /// Consecutive failures; reset by an answer.
    fails: AtomicU32,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    /// Connected UDP sockets between exchanges (CoreDNS reuses its upstream sockets too):
    /// a query then costs a send and a receive, not a socket's set-up and tear-down.
    idle: Mutex<Vec<tokio::net::UdpSocket>>,
}

pub struct Upstreams {
    list: Vec<Arc<Upstream>>,
    policy: Policy,
    next: AtomicUsize,
    max_concurrent: usize,
    in_flight: AtomicUsize,
    pub rejected: AtomicU64,
}

/// A place among the queries in flight, given back on drop.
pub struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// An upstream's answer as it came and decoded.
pub struct Answer {
    pub bytes: Vec<u8>,
    pub message: Message,
}

impl Upstreams {
    pub fn new(addrs: Vec<SocketAddr>, policy: Policy, max_concurrent: usize) -> Upstreams {
        let list = addrs
            .into_iter()
            .map(|addr| {
                let (fails, requests, failures) = (AtomicU32::new(0), AtomicU64::new(0), AtomicU64::new(0));
                Arc::new(Upstream { addr, fails, requests, failures, idle: Mutex::default() })
            })
            .collect();
        let (next, in_flight, rejected) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicU64::new(0));
        Upstreams { list, policy, next, max_concurrent, in_flight, rejected }
    }

    /// A place for one more query in flight, if there is room (0: no limit).
    pub fn slot(&self) -> Option<Slot<'_>> {
        let before = self.in_flight.fetch_add(1, Relaxed);
        let slot = Slot(&self.in_flight);
        if self.max_concurrent > 0 && before >= self.max_concurrent {
            self.rejected.fetch_add(1, Relaxed);
            return None;
        }
        Some(slot)
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Upstream> {
        self.list.iter().map(|u| u.as_ref())
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.list.iter().map(|u| u.addr).collect()
    }

    fn order(&self) -> Vec<&Arc<Upstream>> {
        let mut order: Vec<&Arc<Upstream>> = self.list.iter().collect();
        match self.policy {
            Policy::Sequential => {}
            Policy::RoundRobin => {
                let start = self.next.fetch_add(1, Relaxed);
                let len = order.len().max(1);
                order.rotate_left(start % len);
            }
            Policy::Random => fastrand::shuffle(&mut order),
        }
        // a stable sort: the policy's order holds among the healthy and among the failing
        order.sort_by_key(|u| u.fails.load(Relaxed) >= MAX_FAILS);
        order
    }

    /// The first answer of the upstreams in turn; `None` when none answers in time.
    pub async fn exchange(&self, packet: &[u8], transport: Transport) -> Option<Answer> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        for upstream in self.order() {
            upstream.requests.fetch_add(1, Relaxed);
            match tokio::time::timeout_at(deadline, upstream.ask(packet, transport)).await {
                Ok(Ok(answer)) => {
                    upstream.fails.store(0, Relaxed);
                    return Some(answer);
                }
                Ok(Err(e)) => upstream.failed(&e),
                Err(_) => {
                    upstream.failed(&timed_out("forward deadline passed"));
                    break;
                }
            }
        }
        None
    }
}

impl Upstream {
    async fn ask(&self, packet: &[u8], transport: Transport) -> io::Result<Answer> {
        let bytes = match transport {
            Transport::Tcp => tcp_exchange(self.addr, packet).await?,
            Transport::Udp => {
                let bytes = self.udp(packet).await?;
                if bytes[2] & TC_BIT == 0 {
                    bytes
                } else {
                    tracing::debug!(upstream = %self.addr, "truncated answer over udp; asking again over tcp");
                    tcp_exchange(self.addr, packet).await?
                }
            }
        };
        let message = Message::from_vec(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Answer { bytes, message })
    }

    /// One exchange over UDP on an idle socket of this upstream's, or a new one. Only a
    /// socket whose exchange ended with the answer goes back: one that timed out may still
    /// receive it late.
    async fn udp(&self, packet: &[u8]) -> io::Result<Vec<u8>> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let socket = match idle {
            Some(socket) => socket,
            None => udp_socket(self.addr).await?,
        };
        let answer = udp_exchange(&socket, packet).await?;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE_SOCKETS {
            idle.push(socket);
        }
        Ok(answer)
    }

    fn failed(self: &Arc<Self>, error: &io::Error) {
        let fails = self.fails.fetch_add(1, Relaxed) + 1;
        self.failures.fetch_add(1, Relaxed);
        tracing::debug!(upstream = %self.addr, error = %error, fails, "upstream did not answer");
        // one prober per failing spell: only the failure that crosses the line starts it
        if fails == MAX_FAILS {
            tracing::info!(upstream = %self.addr, "upstream failing; probing it until it answers");
            tokio::spawn(self.clone().probe());
        }
    }

    /// `. IN NS` until any answer (whatever its rcode: the upstream is there), then healthy.
    async fn probe(self: Arc<Self>) {
        let Some(packet) = probe_query() else { return };
        while self.fails.load(Relaxed) >= MAX_FAILS {
            let probed = match udp_socket(self.addr).await {
                Ok(socket) => udp_exchange(&socket, &packet).await,
                Err(e) => Err(e),
            };
            match probed {
                Ok(_) => {
                    self.fails.store(0, Relaxed);
                    tracing::info!(upstream = %self.addr, "upstream answers again");
                }
                Err(_) => tokio::time::sleep(PROBE_EVERY).await,
            }
        }
    }
}

fn probe_query() -> Option<Vec<u8>> {
    let mut m = Message::query();
    m.metadata.id = fastrand::u16(..);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::root(), RecordType::NS));
    m.to_vec().ok()
}

/// The TC flag in the third header byte.
const TC_BIT: u8 = 0x02;

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

/// Only the answer to this query (its id) counts.
fn answers(packet: &[u8], reply: &[u8]) -> bool {
    reply.len() >= HEADER_LEN && reply[..2] == packet[..2]
}

/// A UDP socket connected to `upstream` (so the kernel drops datagrams from anyone else).
async fn udp_socket(upstream: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    let bind: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = tokio::net::UdpSocket::bind(bind).await?;
    socket.connect(upstream).await?;
    Ok(socket)
}

async fn udp_exchange(socket: &tokio::net::UdpSocket, packet: &[u8]) -> io::Result<Vec<u8>> {
    socket.send(packet).await?;
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let n = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut buf))
            .await
            .map_err(|_| timed_out("no answer over udp"))??;
        if answers(packet, &buf[..n]) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// One length-prefixed query on a fresh connection.
async fn tcp_exchange(upstream: SocketAddr, packet: &[u8]) -> io::Result<Vec<u8>> {
    let len =
        u16::try_from(packet.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query over 64 KiB"))?;
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(upstream).await?;
        let mut out = Vec::with_capacity(packet.len() + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(packet);
        stream.write_all(&out).await?;
        let mut buf = vec![0u8; usize::from(stream.read_u16().await?)];
        stream.read_exact(&mut buf).await?;
        if !answers(packet, &buf) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "an answer to another query over tcp"));
        }
        Ok(buf)
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange).await.map_err(|_| timed_out("no answer over tcp"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstreams(policy: Policy) -> Upstreams {
        let addrs = (1..=3).map(|i| SocketAddr::from(([192, 0, 2, i], 53))).collect();
        Upstreams::new(addrs, policy, 2)
    }

    fn last_octets(order: &[&Arc<Upstream>]) -> Vec<u8> {
        order
            .iter()
            .map(|u| match u.addr.ip() {
                std::net::IpAddr::V4(v4) => v4.octets()[3],
                std::net::IpAddr::V6(_) => 0,
            })
            .collect()
    }

    #[test]
    fn policies_order_the_upstreams_and_failing_ones_go_last() {
        let sequential = upstreams(Policy::Sequential);
        assert_eq!(last_octets(&sequential.order()), [1, 2, 3]);
        sequential.list[0].fails.store(MAX_FAILS, Relaxed);
        assert_eq!(last_octets(&sequential.order()), [2, 3, 1]);
        sequential.list[0].fails.store(MAX_FAILS - 1, Relaxed);
        assert_eq!(last_octets(&sequential.order()), [1, 2, 3], "one failure is not enough");

        let round_robin = upstreams(Policy::RoundRobin);
        let firsts: Vec<u8> = (0..4).map(|_| last_octets(&round_robin.order())[0]).collect();
        assert_eq!(firsts, [1, 2, 3, 1]);

        let random = upstreams(Policy::Random);
        random.list[1].fails.store(MAX_FAILS, Relaxed);
        for _ in 0..20 {
            let order = last_octets(&random.order());
            assert_eq!(order[2], 2, "{order:?}");
        }
    }

    #[test]
    fn no_more_than_max_concurrent_slots() {
        let u = upstreams(Policy::Sequential);
        let (a, b) = (u.slot(), u.slot());
        assert!(a.is_some() && b.is_some());
        assert!(u.slot().is_none());
        drop(a);
        assert!(u.slot().is_some(), "a slot given back is free again");
        assert_eq!(u.rejected.load(Relaxed), 1);
    }
}
