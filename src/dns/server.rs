//! The wire: UDP served by blocking worker threads on one socket (a tight
//! recv → answer → send loop, no task hand-offs), TCP by a tokio task per connection,
//! both through `Server::handle`. Bad packets never stop a loop: shorter than a header
//! or a response → dropped; undecodable → FORMERR; a response larger than the client's
//! UDP limit (512 bytes, or its EDNS size) → as many records as fit, with TC set.
//! Forwarded names are answered from the cache when they can be, else by a task that
//! asks the upstreams (`forward.rs`), so a slow upstream never holds up a UDP worker.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::answer::{Authority, MAX_UDP_PAYLOAD, Outcome, answer, edns_for, reply_to};
use super::cache::Cache;
use super::forward::Upstreams;
use super::metrics::{self, Metrics};
use super::zone::Zone;

/// DNS header length; anything shorter is not a message.
pub const HEADER_LEN: usize = 12;
/// How long a TCP connection may sit idle between queries (miekg/dns's default).
const TCP_IDLE: Duration = Duration::from_secs(8);

pub struct Server {
    pub zone: RwLock<Zone>,
    pub auth: Authority,
    pub upstreams: Upstreams,
    /// Forwarded answers; `None` with `--cache-ttl 0`.
    pub cache: Option<Cache>,
    pub metrics: Metrics,
    /// The metrics' `server` label, `dns://<address>:<port>` as CoreDNS writes it.
    pub name: String,
}

#[derive(Clone, Copy, PartialEq)]
pub enum Transport {
    Udp,
    Tcp,
}

pub enum Reply {
    Send(Vec<u8>),
    /// Ask the upstreams, then answer (SERVFAIL if none does).
    Forward(Box<Message>),
    Drop,
}

/// A query as received: when, over what, from whom (for the metrics).
#[derive(Clone, Copy)]
pub struct Received {
    pub at: Instant,
    pub transport: Transport,
    pub peer: SocketAddr,
}

impl Received {
    pub fn now(transport: Transport, peer: SocketAddr) -> Received {
        Received { at: Instant::now(), transport, peer }
    }
}

impl Server {
    /// The reply to `packet` and its query type's metrics slot.
    pub fn handle(&self, packet: &[u8], from: Received) -> (Reply, usize) {
        // a response (QR set) is never answered, so two servers cannot ping-pong
        if packet.len() < HEADER_LEN || packet[2] & 0x80 != 0 {
            return (Reply::Drop, metrics::OTHER);
        }
        let request = match Message::from_vec(packet) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, len = packet.len(), "undecodable query; FORMERR");
                self.metrics.request(from.transport, from.peer.is_ipv6(), metrics::OTHER);
                return (Reply::Send(format_error(packet)), metrics::OTHER);
            }
        };
        let slot = request.queries.first().map_or(metrics::OTHER, |q| metrics::type_slot(q.query_type()));
        self.metrics.request(from.transport, from.peer.is_ipv6(), slot);
        let outcome = {
            let zone = self.zone.read().unwrap_or_else(|e| e.into_inner());
            answer(&request, &zone, &self.auth, !self.upstreams.is_empty())
        };
        let reply = match outcome {
            Outcome::Reply(response) => {
                encode(&response, limit(&request, from.transport)).map_or(Reply::Drop, Reply::Send)
            }
            Outcome::Forward => match self.cached(&request, from.transport) {
                Some(bytes) => Reply::Send(bytes),
                None => Reply::Forward(Box::new(request)),
            },
        };
        (reply, slot)
    }

    /// The cached answer to a query to be forwarded, encoded for the client.
    fn cached(&self, request: &Message, transport: Transport) -> Option<Vec<u8>> {
        let cache = self.cache.as_ref()?;
        let Some((mut response, kind)) = cache.get(request, Instant::now()) else {
            self.metrics.cache_miss();
            return None;
        };
        self.metrics.cache_hit(kind);
        response.edns = edns_for(request);
        encode(&response, limit(request, transport))
    }

    /// Ask the upstreams; their answer (as it came if it fits the client), SERVFAIL when
    /// none answers, REFUSED when too many queries are out already.
    pub async fn forward(&self, packet: &[u8], request: &Message, transport: Transport) -> Option<Vec<u8>> {
        let max = limit(request, transport);
        let Some(_slot) = self.upstreams.slot() else {
            tracing::debug!(id = request.metadata.id, "too many forwarded queries in flight; REFUSED");
            return failure(request, ResponseCode::Refused, max);
        };
        if let Some(answer) = self.upstreams.exchange(packet, transport).await {
            if let Some(cache) = &self.cache {
                cache.put(request, &answer.message, Instant::now());
            }
            if answer.bytes.len() <= usize::from(max) {
                return Some(answer.bytes);
            }
            // a full answer over TCP to a truncated one over UDP, more than the client takes
            return encode(&answer.message, max);
        }
        failure(request, ResponseCode::ServFail, max)
    }

    /// Count a response sent.
    pub fn sent(&self, slot: usize, from: Received, bytes: &[u8]) {
        self.metrics.response(slot, from.at, bytes);
    }
}

/// The largest response the client takes over this transport.
fn limit(request: &Message, transport: Transport) -> u16 {
    match (transport, &request.edns) {
        (Transport::Tcp, _) => u16::MAX,
        (Transport::Udp, Some(edns)) => edns.max_payload().clamp(512, MAX_UDP_PAYLOAD),
        (Transport::Udp, None) => 512,
    }
}

/// The response within `max` bytes; records that do not fit are left out and TC is set.
fn encode(response: &Message, max: u16) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut buf);
    encoder.set_max_size(max);
    match response.emit(&mut encoder) {
        Ok(()) => Some(buf),
        Err(e) => {
            tracing::warn!(error = %e, id = response.metadata.id, "cannot encode a response; dropped");
            None
        }
    }
}

/// An empty answer with `code`.
fn failure(request: &Message, code: ResponseCode, max: u16) -> Option<Vec<u8>> {
    let mut response = reply_to(request);
    response.metadata.response_code = code;
    encode(&response, max)
}

/// FORMERR for a query whose header is readable but whose body is not: its id and
/// opcode, QR set, no sections.
fn format_error(packet: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    out[..2].copy_from_slice(&packet[..2]);
    out[2] = 0x80 | (packet[2] & 0x78);
    out[3] = ResponseCode::FormErr.low();
    out
}

/// One UDP worker: until the socket fails for good.
pub fn serve_udp(server: Arc<Server>, socket: UdpSocket, runtime: tokio::runtime::Handle) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; usize::from(u16::MAX) + 1];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // ICMP errors of earlier sends surface here on Linux; they end nothing
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) => {
                tracing::warn!(error = %e, "udp receive");
                // whatever it is, it is not worth a busy loop
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let from = Received::now(Transport::Udp, peer);
        match server.handle(&buf[..n], from) {
            (Reply::Send(bytes), slot) => {
                send_udp(&socket, &bytes, peer);
                server.sent(slot, from, &bytes);
            }
            (Reply::Forward(request), slot) => {
                let (server, socket, packet) = (server.clone(), socket.clone(), buf[..n].to_vec());
                runtime.spawn(async move {
                    if let Some(bytes) = server.forward(&packet, &request, Transport::Udp).await {
                        send_udp(&socket, &bytes, peer);
                        server.sent(slot, from, &bytes);
                    }
                });
            }
            (Reply::Drop, _) => {}
        }
    }
}

fn send_udp(socket: &UdpSocket, bytes: &[u8], peer: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, peer) {
        tracing::debug!(%peer, error = %e, "udp send");
    }
}

pub async fn serve_tcp(server: Arc<Server>, listener: tokio::net::TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let server = server.clone();
                tokio::spawn(async move {
                    if let Err(e) = tcp_connection(&server, stream, peer).await {
                        tracing::debug!(%peer, error = %e, "tcp connection ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Length-prefixed queries, answered in order, until the client closes or idles.
async fn tcp_connection(server: &Server, mut stream: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        buf.resize(len, 0);
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "partial query"))??;
        let from = Received::now(Transport::Tcp, peer);
        let (bytes, slot) = match server.handle(&buf, from) {
            (Reply::Send(bytes), slot) => (bytes, slot),
            (Reply::Forward(request), slot) => match server.forward(&buf, &request, Transport::Tcp).await {
                Some(bytes) => (bytes, slot),
                None => continue,
            },
            (Reply::Drop, _) => continue,
        };
        let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        stream.write_all(&len.to_be_bytes()).await?;
        stream.write_all(&bytes[..usize::from(len)]).await?;
        server.sent(slot, from, &bytes);
    }
}
