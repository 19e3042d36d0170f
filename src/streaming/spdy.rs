//! The part of SPDY/3.1 a client of the runtime's streaming server needs (framing per the
//! SPDY/3.1 draft): control frames SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING,
//! GOAWAY, HEADERS, WINDOW_UPDATE and DATA frames. Header blocks we send are one zlib
//! stream per connection, flushed per block. They are sent without the SPDY preset
//! dictionary: a zlib stream only asks for a dictionary when its header says so (FDICT), so
//! the peer's inflater reads ours as is; the blocks we receive are never needed (replies
//! only acknowledge our streams), so they are skipped undecoded.

use flate2::{Compress, Compression, FlushCompress};

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
/// The largest frame payload (24-bit length).
const MAX_LENGTH: usize = 0x00ff_ffff;

#[derive(Debug, PartialEq)]
pub enum Frame {
    /// A stream opened by the peer or by us; the header block as sent (compressed).
    SynStream {
        stream: u32,
        flags: u8,
        headers: Vec<u8>,
    },
    SynReply {
        stream: u32,
        flags: u8,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Settings,
    Ping {
        id: u32,
    },
    GoAway {
        last_stream: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        flags: u8,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    Data {
        stream: u32,
        flags: u8,
        data: Vec<u8>,
    },
    /// A control frame of a type this client has no use for.
    Unknown {
        kind: u16,
    },
}

/// Compresses header blocks: one zlib stream for the connection's lifetime.
pub struct HeaderCompressor {
    z: Compress,
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        HeaderCompressor { z: Compress::new(Compression::default(), true) }
    }
}

impl HeaderCompressor {
    /// The compressed block of `pairs` (names lower-cased, as SPDY requires).
    pub fn block(&mut self, pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
        for (name, value) in pairs {
            for s in [name.to_ascii_lowercase().as_str(), value] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = raw.as_slice();
        loop {
            out.reserve(256);
            let before_in = self.z.total_in();
            // a failing in-memory deflate cannot happen with valid state; end the block
            if self.z.compress_vec(input, &mut out, FlushCompress::Sync).is_err() {
                break;
            }
            input = &input[(self.z.total_in() - before_in) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        out
    }
}

fn control(kind: u16, flags: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(payload);
}

impl Frame {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let id = |s: &u32| (s & 0x7fff_ffff).to_be_bytes();
        match self {
            Frame::SynStream { stream, flags, headers } => {
                let mut p = id(stream).to_vec();
                p.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // associated stream, priority, slot
                p.extend_from_slice(headers);
                control(1, *flags, &p, out);
            }
            Frame::SynReply { stream, flags } => control(2, *flags, &id(stream), out),
            Frame::RstStream { stream, status } => control(3, 0, &[id(stream), status.to_be_bytes()].concat(), out),
            Frame::Settings => control(4, 0, &0u32.to_be_bytes(), out),
            Frame::Ping { id } => control(6, 0, &id.to_be_bytes(), out),
            Frame::GoAway { last_stream, status } => {
                control(7, 0, &[id(last_stream), status.to_be_bytes()].concat(), out)
            }
            Frame::Headers { stream, flags } => control(8, *flags, &id(stream), out),
            Frame::WindowUpdate { stream, delta } => {
                control(9, 0, &[id(stream), (delta & 0x7fff_ffff).to_be_bytes()].concat(), out)
            }
            Frame::Data { stream, flags, data } => {
                // larger payloads go as several frames, FIN on the last; an empty one
                // (a bare FIN) is one frame
                let chunks: Vec<&[u8]> = if data.is_empty() { vec![&[]] } else { data.chunks(MAX_LENGTH).collect() };
                let last = chunks.len() - 1;
                for (i, chunk) in chunks.into_iter().enumerate() {
                    out.extend_from_slice(&id(stream));
                    out.push(if i == last { *flags } else { 0 });
                    out.extend_from_slice(&(chunk.len() as u32).to_be_bytes()[1..]);
                    out.extend_from_slice(chunk);
                }
            }
            Frame::Unknown { .. } => {}
        }
    }

    /// One frame from the front of `buf`: the frame and the bytes it took, None while
    /// incomplete, an error for a frame no SPDY/3 peer sends.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, String> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let flags = buf[4];
        let length = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < 8 + length {
            return Ok(None);
        }
        let p = &buf[8..8 + length];
        let word = |i: usize| p.get(i..i + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let short = || format!("control frame too short ({length} bytes)");
        if buf[0] & 0x80 == 0 {
            let stream = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            return Ok(Some((Frame::Data { stream, flags, data: p.to_vec() }, 8 + length)));
        }
        let version = u16::from_be_bytes([buf[0] & 0x7f, buf[1]]);
        if version != VERSION {
            return Err(format!("SPDY version {version}, not 3"));
        }
        let kind = u16::from_be_bytes([buf[2], buf[3]]);
        let stream = || word(0).map(|w| w & 0x7fff_ffff).ok_or_else(short);
        let frame = match kind {
            1 => Frame::SynStream { stream: stream()?, flags, headers: p.get(10..).unwrap_or_default().to_vec() },
            2 => Frame::SynReply { stream: stream()?, flags },
            3 => Frame::RstStream { stream: stream()?, status: word(4).ok_or_else(short)? },
            4 => Frame::Settings,
            6 => Frame::Ping { id: word(0).ok_or_else(short)? },
            7 => Frame::GoAway { last_stream: stream()?, status: word(4).unwrap_or(0) },
            8 => Frame::Headers { stream: stream()?, flags },
            9 => Frame::WindowUpdate { stream: stream()?, delta: word(4).ok_or_else(short)? & 0x7fff_ffff },
            kind => Frame::Unknown { kind },
        };
        Ok(Some((frame, 8 + length)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Decompress, FlushDecompress};

    fn round_trip(f: Frame) -> Frame {
        let mut bytes = Vec::new();
        f.encode(&mut bytes);
        let (back, used) = Frame::decode(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(Frame::decode(&bytes[..bytes.len() - 1]).unwrap(), None, "incomplete");
        back
    }

    #[test]
    fn frames_round_trip() {
        for f in [
            Frame::SynStream { stream: 5, flags: FLAG_FIN, headers: vec![1, 2, 3] },
            Frame::SynReply { stream: 5, flags: 0 },
            Frame::RstStream { stream: 7, status: 5 },
            Frame::Ping { id: 2 },
            Frame::GoAway { last_stream: 9, status: 0 },
            Frame::WindowUpdate { stream: 1, delta: 65536 },
            Frame::Data { stream: 3, flags: FLAG_FIN, data: b"hello".to_vec() },
            Frame::Data { stream: 3, flags: FLAG_FIN, data: Vec::new() },
        ] {
            let debug = format!("{f:?}");
            assert_eq!(format!("{:?}", round_trip(f)), debug);
        }
        // a known SYN_REPLY for stream 1 (flags 0, empty header block)
        let known = [0x80, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01];
        assert_eq!(Frame::decode(&known).unwrap(), Some((Frame::SynReply { stream: 1, flags: 0 }, 12)));
        let mut v2 = known;
        v2[1] = 2;
        assert!(Frame::decode(&v2).is_err(), "SPDY/2 is refused");
        let truncated = [0x80, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00];
        assert!(Frame::decode(&truncated).is_err(), "a short RST_STREAM is an error, not a panic");
    }

    #[test]
    fn header_blocks_inflate_as_one_stream() {
        let mut c = HeaderCompressor::default();
        let first = c.block(&[("streamType", "error")]);
        let second = c.block(&[("streamtype", "stdout")]);
        let mut d = Decompress::new(true);
        let mut out = Vec::with_capacity(4096);
        d.decompress_vec(&first, &mut out, FlushDecompress::Sync).unwrap();
        let expect_first = b"\0\0\0\x01\0\0\0\x0astreamtype\0\0\0\x05error";
        assert_eq!(out, expect_first);
        out.clear();
        d.decompress_vec(&second, &mut out, FlushDecompress::Sync).unwrap();
        assert_eq!(out, b"\0\0\0\x01\0\0\0\x0astreamtype\0\0\0\x06stdout");
        // the zlib header says no preset dictionary, so any SPDY inflater takes it as is
        assert_eq!(first[1] & 0x20, 0);
    }
}
