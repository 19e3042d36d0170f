//! grpc.health.v1.Health/Check over tonic with a bytes codec: the request and reply are
//! one-field protobuf messages, encoded here by hand rather than adding a codegen step.

use bytes::{Buf, BufMut};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

const CHECK: &str = "/grpc.health.v1.Health/Check";

/// The reply's status: 0 UNKNOWN, 1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN.
pub async fn check(host: &str, port: u16, service: &str) -> Result<u64, String> {
    let host = if host.contains(':') { format!("[{host}]") } else { host.to_string() };
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{host}:{port}")).map_err(|e| e.to_string())?;
    let channel = endpoint.connect().await.map_err(|e| format!("failed to connect service \"{host}:{port}\": {e}"))?;
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.map_err(|e| format!("health rpc: {e}"))?;
    let path = http::uri::PathAndQuery::from_static(CHECK);
    let reply = client
        .unary(tonic::Request::new(request(service)), path, Bytes)
        .await
        .map_err(|s| format!("health rpc failed: {} {}", s.code(), s.message()))?;
    Ok(status_of(reply.get_ref()))
}

pub fn status_name(status: u64) -> &'static str {
    match status {
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    }
}

/// HealthCheckRequest { string service = 1; }
pub fn request(service: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if !service.is_empty() {
        out.push(0x0a);
        put_varint(&mut out, service.len() as u64);
        out.extend_from_slice(service.as_bytes());
    }
    out
}

/// HealthCheckResponse { ServingStatus status = 1; }, other fields skipped.
pub fn status_of(mut msg: &[u8]) -> u64 {
    let mut status = 0;
    while let Some(key) = varint(&mut msg) {
        let value = match key & 7 {
            0 => varint(&mut msg),
            2 => varint(&mut msg).map(|len| {
                let skip = (len as usize).min(msg.len());
                msg = &msg[skip..];
                0
            }),
            _ => None,
        };
        match (key >> 3, value) {
            (1, Some(v)) if key & 7 == 0 => status = v,
            (_, None) => break,
            _ => {}
        }
    }
    status
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint(msg: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = msg.split_first()?;
        *msg = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A codec passing message bytes through unchanged.
#[derive(Clone, Copy)]
struct Bytes;

impl Codec for Bytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Bytes;
    type Decoder = Bytes;

    fn encoder(&mut self) -> Bytes {
        Bytes
    }

    fn decoder(&mut self) -> Bytes {
        Bytes
    }
}

impl Encoder for Bytes {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Bytes {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}
