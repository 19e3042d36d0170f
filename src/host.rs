//! Facts about the machine this process runs on, shared by the components.

/// The address this machine reaches others from: the source address of a route to a
/// public address (a UDP connect sends nothing), else loopback.
pub fn machine_ip() -> String {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0");
    socket
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into())
}
