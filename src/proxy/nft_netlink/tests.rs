//! The encoder against nft itself: byte for byte against what nft 1.0.6 sent for the
//! same commands (captured with `strace -e sendmsg -s 100000`), and in a kernel (a
//! network namespace of the test's own) where incremental syncs sent as netlink batches
//! must leave the same table as full syncs written by `nft -f`.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use super::*;
use crate::proxy::model::ServicePort;
use crate::proxy::nft_rules::tests::{cfg, ep, sp};
use crate::proxy::nft_rules::{Existing, Written, plan};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn exprs(rule: Rule) -> (Vec<u8>, Option<Vec<u8>>) {
    let ids = SetIds::from([("vm".to_string(), 1), ("aff".to_string(), 2)]);
    rule_exprs(&rule, &ids).unwrap()
}

const MASQ: &str = "mark-for-masquerade";

#[test]
fn rules_encode_as_nft_does() {
    let ip = Ipv4Addr::new(10, 96, 0, 10);
    let cases: Vec<(Rule, &str, Option<&str>)> = vec![
        (
            Rule::MasqueradeTo { ip, protocol: "tcp", port: 53, unless_from: Some("10.244.0.0/16".parse().unwrap()) },
            "340001800c0001007061796c6f6164002400028008000100000000010800020000000001080003000000001008000400000000042c00018008000100636d700020000280080001000000000108000200000000000c000380080001000a60000a24000180090001006d6574610000000014000280080002000000001008000100000000012c00018008000100636d700020000280080001000000000108000200000000000c0003800500010006000000340001800c0001007061796c6f6164002400028008000100000000010800020000000002080003000000000208000400000000022c00018008000100636d700020000280080001000000000108000200000000000c0003800600010000350000340001800c0001007061796c6f6164002400028008000100000000010800020000000001080003000000000c08000400000000022c00018008000100636d700020000280080001000000000108000200000000010c000380060001000af40000480001800e000100696d6d656469617465000000340002800800010000000000280002802400028008000100fffffffd180002006d61726b2d666f722d6d61737175657261646500",
            None,
        ),
        (
            Rule::MasqueradeTo { ip, protocol: "sctp", port: 53, unless_from: None },
            "340001800c0001007061796c6f6164002400028008000100000000010800020000000001080003000000001008000400000000042c00018008000100636d700020000280080001000000000108000200000000000c000380080001000a60000a24000180090001006d6574610000000014000280080002000000001008000100000000012c00018008000100636d700020000280080001000000000108000200000000000c0003800500010084000000340001800c0001007061796c6f6164002400028008000100000000010800020000000002080003000000000208000400000000022c00018008000100636d700020000280080001000000000108000200000000000c0003800600010000350000480001800e000100696d6d656469617465000000340002800800010000000000280002802400028008000100fffffffd180002006d61726b2d666f722d6d61737175657261646500",
            None,
        ),
        (
            Rule::Affinity { set: "aff".into(), chain: "ep2".into() },
            "340001800c0001007061796c6f6164002400028008000100000000010800020000000001080003000000000c08000400000000042c0001800b0001006c6f6f6b757000001c000280080002000000000108000100616666000800040000000002380001800e000100696d6d656469617465000000240002800800010000000000180002801400028008000100fffffffc0800020065703200",
            None,
        ),
        (
            Rule::Pick { n: 3, vmap: "vm".into() },
            "340001800b0001006e756d67656e0000240002800800010000000001080002000000000308000300000000010800040000000000340001800b0001006c6f6f6b75700000240002800800020000000001080003000000000007000100766d00000800040000000001",
            None,
        ),
        (
            Rule::Hairpin { ip: Ipv4Addr::new(10, 0, 7, 99) },
            "340001800c0001007061796c6f6164002400028008000100000000010800020000000001080003000000000c08000400000000042c00018008000100636d700020000280080001000000000108000200000000000c000380080001000a000763480001800e000100696d6d656469617465000000340002800800010000000000280002802400028008000100fffffffd180002006d61726b2d666f722d6d61737175657261646500",
            None,
        ),
        (
            Rule::Remember { set: "aff".into() },
            "340001800c0001007061796c6f6164002400028008000100000000010800020000000001080003000000000c0800040000000004340001800b00010064796e7365740000240002800800040000000001080003000000000108000100616666000800020000000002",
            None,
        ),
        (
            Rule::Dnat { protocol: "udp", ip: Ipv4Addr::new(10, 0, 7, 99), port: 80 },
            "24000180090001006d6574610000000014000280080002000000001008000100000000012c00018008000100636d700020000280080001000000000108000200000000000c00038005000100110000002c0001800e000100696d6d6564696174650000001800028008000100000000010c000280080001000a0007632c0001800e000100696d6d6564696174650000001800028008000100000000020c000280060001000050000038000180080001006e6174002c00028008000100000000010800020000000002080003000000000108000500000000020800070000000002",
            None,
        ),
        (
            Rule::FromGoto {
                cidr: "10.244.0.0/16".parse().unwrap(),
                chain: "ep2".into(),
                comment: "short-circuit pod traffic".into(),
            },
            "340001800c0001007061796c6f6164002400028008000100000000010800020000000001080003000000000c08000400000000022c00018008000100636d700020000280080001000000000108000200000000000c000380060001000af40000380001800e000100696d6d656469617465000000240002800800010000000000180002801400028008000100fffffffc0800020065703200",
            Some("001a73686f72742d6369726375697420706f64207472616666696300"),
        ),
        (
            Rule::FromLocal { verdict: Verdict::Jump(MASQ.into()), comment: "masquerade local traffic".into() },
            "2800018008000100666962001c0002800800030000000001080002000000000308000100000000012c00018008000100636d700020000280080001000000000108000200000000000c0003800800010002000000480001800e000100696d6d656469617465000000340002800800010000000000280002802400028008000100fffffffd180002006d61726b2d666f722d6d61737175657261646500",
            Some("00196d617371756572616465206c6f63616c207472616666696300"),
        ),
        (
            Rule::Always(Verdict::Goto("ep2".into())),
            "380001800e000100696d6d656469617465000000240002800800010000000000180002801400028008000100fffffffc0800020065703200",
            None,
        ),
        (
            Rule::Dnat { protocol: "sctp", ip: Ipv4Addr::new(10, 0, 7, 99), port: 80 },
            "24000180090001006d6574610000000014000280080002000000001008000100000000012c00018008000100636d700020000280080001000000000108000200000000000c00038005000100840000002c0001800e000100696d6d6564696174650000001800028008000100000000010c000280080001000a0007632c0001800e000100696d6d6564696174650000001800028008000100000000020c000280060001000050000038000180080001006e6174002c00028008000100000000010800020000000002080003000000000108000500000000020800070000000002",
            None,
        ),
    ];
    for (rule, want, comment) in cases {
        let text = rule.to_string();
        let (got, got_comment) = exprs(rule);
        assert_eq!(got, hex(want), "{text}");
        assert_eq!(got_comment, comment.map(hex), "{text}");
    }
}

#[test]
fn prefixes_encode_as_nft_does() {
    // `ip saddr != 10.240.0.0/12 jump mark-for-masquerade`: masked; /8: one byte
    let mut e = Exprs(Buf::default());
    e.address_in(IP_SADDR, "10.240.0.0/12".parse().unwrap(), 1).unwrap();
    e.verdict(&Verdict::Jump(MASQ.into()));
    assert_eq!(
        e.0.b,
        hex(
            "340001800c0001007061796c6f6164002400028008000100000000010800020000000001080003000000000c0800040000000004440001800c0001006269747769736500340002800800010000000001080002000000000108000300000000040c00048008000100fff000000c00058008000100000000002c00018008000100636d700020000280080001000000000108000200000000010c000380080001000af00000480001800e000100696d6d656469617465000000340002800800010000000000280002802400028008000100fffffffd180002006d61726b2d666f722d6d61737175657261646500"
        )
    );
    let mut e = Exprs(Buf::default());
    e.address_in(IP_SADDR, "10.0.0.0/8".parse().unwrap(), 0).unwrap();
    e.verdict(&Verdict::Goto("ep2".into()));
    assert_eq!(
        e.0.b,
        hex(
            "340001800c0001007061796c6f6164002400028008000100000000010800020000000001080003000000000c08000400000000012c00018008000100636d700020000280080001000000000108000200000000000c000380050001000a000000380001800e000100696d6d656469617465000000240002800800010000000000180002801400028008000100fffffffc0800020065703200"
        )
    );
}

#[test]
fn elements_encode_as_nft_does() {
    let goto = |c: &str| Some(Verdict::Goto(c.into()));
    let list = |elements: &[Element]| {
        let mut b = Buf::default();
        for (e, position) in elements.iter().zip(1..) {
            element(&mut b, position, e).unwrap();
        }
        b.b
    };
    let vmap = [
        Element { key: Key::Index(0), value: goto("ep"), comment: None },
        Element { key: Key::Index(1), value: goto("ep2"), comment: None },
    ];
    assert_eq!(
        list(&vmap),
        hex(
            "280001800c0001800800010000000000180002801400028008000100fffffffc0700020065700000280002800c0001800800010001000000180002801400028008000100fffffffc0800020065703200"
        )
    );
    let reject = Element {
        key: Key::Service(Ipv4Addr::new(10, 96, 0, 10), "tcp", 53),
        value: goto("reject-chain"),
        comment: Some("ns/x:dns has no endpoints".into()),
    };
    assert_eq!(
        list(&[reject]),
        hex(
            "5c00018014000180100001000a60000a0600000000350000240002802000028008000100fffffffc1100020072656a6563742d636861696e0000000020000600001a6e732f783a646e7320686173206e6f20656e64706f696e747300"
        )
    );
    let drop = Element { key: Key::NodePort("udp", 31111), value: Some(Verdict::Drop), comment: None };
    assert_eq!(list(&[drop]), hex("24000180100001800c0001001100000079870000100002800c0002800800010000000000"));
    let ip = Element { key: Key::Ip(Ipv4Addr::new(10, 96, 0, 10)), value: None, comment: None };
    assert_eq!(list(&[ip]), hex("100001800c000180080001000a60000a"));
}

#[test]
fn what_only_nft_takes_is_not_encoded() {
    assert!(encode(&[Op::AddChain("a".into())]).is_some());
    assert!(encode(&[Op::AddChain("a".into()), Op::Text("add table ip kube-proxy".into())]).is_none());
    let long = Rule::FromLocal { verdict: Verdict::Drop, comment: "x".repeat(200) };
    assert!(encode(&[Op::AddRule { chain: "a".into(), rule: long }]).is_none());
    assert_eq!(parse_errors(&[]), []);
}

/// Runs `f` on a thread of its own in a fresh network namespace (so its nftables tables
/// are its own, and vanish with it).
fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: unshare(2) moves only this thread into a new network namespace
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare: {}", io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

fn nft(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write as _;
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `nft list table`, with the chains and sets sorted (the table lists them in the order
/// they were made) and each set's elements sorted (their order is the hash's).
fn listing() -> String {
    let text = nft(&["list", "table", "ip", TABLE_NAME], None);
    // the table's closing brace stays last
    let body = text.trim_end().strip_suffix('}').unwrap();
    let mut blocks: Vec<&str> = body.trim_end().split("\n\n").collect();
    blocks.sort();
    let text = blocks.join("\n\n");
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("elements = {") {
        let open = start + "elements = {".len();
        let close = open + rest[open..].find('}').unwrap();
        let mut items: Vec<&str> = rest[open..close].split(',').map(str::trim).collect();
        items.sort();
        out.push_str(&rest[..open]);
        out.push_str(&items.join(", "));
        rest = &rest[close..];
    }
    out.push_str(rest);
    out
}

/// Every shape of service port, changed step by step: each step sent as a netlink batch
/// leaves the table `nft list` shows after a full sync of the same state by `nft -f`.
#[test]
fn netlink_batches_leave_the_table_a_full_nft_sync_writes() {
    let mut np = sp("np", 2, vec![ep("10.1.1.1", "a", true), ep("10.1.1.2", "b", true)]);
    np.node_port = Some(31000);
    np.external_ips = vec![Ipv4Addr::new(192, 0, 2, 1)];
    let mut sticky = sp("sticky", 3, vec![ep("10.1.2.1", "a", true), ep("10.1.2.2", "a", true)]);
    sticky.affinity_seconds = Some(30);
    let mut dns = sp("dns", 10, vec![ep("10.1.3.1", "a", true)]);
    dns.protocol = "udp";
    let mut local = sp("local", 11, vec![ep("10.1.4.1", "a", true), ep("10.1.4.2", "b", true)]);
    (local.node_port, local.external_local) = (Some(31001), true);
    let empty = sp("empty", 12, Vec::new());
    let state =
        vec![sp("web", 1, vec![ep("10.1.0.1", "a", true), ep("10.1.0.2", "b", true)]), np, sticky, dns, local, empty];
    in_new_netns(move || {
        let mut state = state;
        let full = |ports: &[ServicePort]| {
            let p = plan(ports.to_vec(), &cfg(), Written::default(), true, &Existing::default());
            nft(&["-f", "-"], Some(&p.text));
            p.next
        };
        let mut written = full(&state);
        let socket = Socket::open().unwrap();
        let steps: [fn(&mut Vec<ServicePort>); 7] = [
            |s| s[0].endpoints[1] = ep("10.1.0.3", "b", true),
            |s| s[2].endpoints.push(ep("10.1.2.3", "b", true)),
            |s| {
                s.remove(2);
                s[1].external_local = true;
            },
            |s| s[0].endpoints.clear(),
            |s| s.push(sp("new", 9, vec![ep("10.1.9.1", "a", true)])),
            |s| {
                let mut sticky = sp("sticky2", 13, vec![ep("10.1.5.1", "a", true)]);
                sticky.affinity_seconds = Some(60);
                s.push(sticky);
                s[3].endpoints[0].ready = false;
                s[3].endpoints[0].serving = false;
            },
            |s| {
                s.retain(|p| p.name != "local");
                s[4].endpoints = vec![ep("10.1.5.1", "b", true)];
            },
        ];
        for (i, step) in steps.iter().enumerate() {
            step(&mut state);
            let p = plan(state.clone(), &cfg(), written, false, &Existing::default());
            let batch = encode(&p.ops).unwrap_or_else(|| panic!("step {i}: not encodable:\n{}", p.text));
            let refs: Vec<&Op> = p.ops.iter().collect();
            socket.send(&batch, &refs).unwrap_or_else(|e| panic!("step {i}: {e:#}\n{}", p.text));
            let incremental = listing();
            nft(&["delete", "table", "ip", TABLE_NAME], None);
            written = full(&state);
            assert_eq!(incremental, listing(), "step {i}:\n{}", p.text);
        }
        // the applier's own full sync (nft for the fixed part, a batch for the rest), over
        // a table holding stale chains and sets, leaves what nft alone writes
        let by_nft = listing();
        let stale = vec![sp("stale", 14, vec![ep("10.1.6.1", "a", true)]), {
            let mut sticky = sp("sticky3", 15, vec![ep("10.1.7.1", "a", true)]);
            sticky.affinity_seconds = Some(5);
            sticky
        }];
        full(&stale);
        let mut applier = crate::proxy::nftables::Applier::default();
        let synced = applier.sync(state.clone(), &cfg(), true).expect("a full sync");
        assert_eq!(synced.applied.via, "nft+netlink");
        assert_eq!(listing(), by_nft);
    });
}

/// A batch the kernel refuses changes nothing and says which command failed.
#[test]
fn refused_batches_name_the_failed_command_and_change_nothing() {
    in_new_netns(|| {
        let p = plan(
            vec![sp("web", 1, vec![ep("10.1.0.1", "a", true)])],
            &cfg(),
            Written::default(),
            true,
            &Existing::default(),
        );
        nft(&["-f", "-"], Some(&p.text));
        let before = listing();
        let ops = vec![
            Op::AddChain("fresh".into()),
            Op::AddRule { chain: "fresh".into(), rule: Rule::Always(Verdict::Drop) },
            Op::DeleteChain("no-such-chain".into()),
        ];
        let refs: Vec<&Op> = ops.iter().collect();
        let err = Socket::open().unwrap().send(&encode(&ops).unwrap(), &refs).unwrap_err().to_string();
        assert!(err.contains("delete chain ip kube-proxy no-such-chain: No such file or directory"), "{err}");
        assert_eq!(listing(), before);
    });
}
