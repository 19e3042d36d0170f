//! Protocol code shared by the API server's proxy subresources and the kubelet's API:
//! forwarding one HTTP request to a backend connection, including the transparent
//! upgrade kubectl's exec/attach/port-forward need (SPDY/3.1 or WebSocket).

pub mod channel;
pub mod forward;
pub mod spdy;
pub mod tunnel;
