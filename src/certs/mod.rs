//! `ferrokube certs`: the certificates, keys and kubeconfigs of a cluster, minted into
//! `<dir>/pki` and `<dir>/kubeconfigs` (kubeadm's `init phase certs` and `kubeconfig`
//! in one step): the cluster CA, the API server's serving certificate, the
//! ServiceAccount signing key pair, and a client certificate plus kubeconfig for the
//! admin and each component. Running it again keeps what is still good (the CA above
//! all) and issues again only what is missing, near expiry, or says the wrong thing.
//! `ferrokube up` calls it on every start.

pub mod issue;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use crate::kubeconfig::{self, Credentials};
use issue::{Ca, Pair, Subject};

#[derive(Args, Debug, Clone)]
pub struct CertsArgs {
    /// Certificates and keys go in DIR/pki, kubeconfigs in DIR/kubeconfigs.
    #[arg(long)]
    pub dir: PathBuf,
    /// The API server URL the kubeconfigs point at.
    #[arg(long, default_value = "https://127.0.0.1:6443")]
    pub server: String,
    /// Kubelets to make credentials for (system:node:<name>); default this host's name.
    #[arg(long = "node-name", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// The service range; its first address (the `kubernetes` Service) goes in the
    /// serving certificate.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: ipnet::Ipv4Net,
    /// More names and addresses for the serving certificate, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub apiserver_cert_extra_sans: Vec<String>,
}

/// The identity the admin kubeconfig carries. kubeadm 1.29+ puts admin.conf in
/// `kubeadm:cluster-admins` (bound to cluster-admin by a binding it creates) and keeps
/// `system:masters` for a separate super-admin.conf; ferrokube has one admin, in
/// `system:masters`, so no binding has to exist before it can act.
pub const ADMIN_USER: &str = "kubernetes-admin";
pub const ADMIN_GROUP: &str = "system:masters";

/// Where everything lives.
pub struct Layout {
    pub pki: PathBuf,
    pub kubeconfigs: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        Layout { pki: dir.join("pki"), kubeconfigs: dir.join("kubeconfigs") }
    }
    pub fn ca(&self) -> Pair {
        Pair::new(&self.pki, "ca")
    }
    pub fn apiserver(&self) -> Pair {
        Pair::new(&self.pki, "apiserver")
    }
    pub fn apiserver_kubelet_client(&self) -> Pair {
        Pair::new(&self.pki, "apiserver-kubelet-client")
    }
    pub fn admin(&self) -> Pair {
        Pair::new(&self.pki, "admin")
    }
    pub fn sa_key(&self) -> PathBuf {
        self.pki.join("sa.key")
    }
    pub fn sa_pub(&self) -> PathBuf {
        self.pki.join("sa.pub")
    }
    pub fn kubeconfig(&self, name: &str) -> PathBuf {
        self.kubeconfigs.join(format!("{name}.conf"))
    }
}

/// The clients with a certificate and kubeconfig each: (file name, user, groups).
fn clients(nodes: &[String]) -> Vec<(String, Subject)> {
    let mut out = vec![
        ("admin".to_string(), Subject::client(ADMIN_USER, &[ADMIN_GROUP])),
        ("scheduler".to_string(), Subject::client("system:kube-scheduler", &[])),
        ("controller-manager".to_string(), Subject::client("system:kube-controller-manager", &[])),
        ("proxy".to_string(), Subject::client("system:kube-proxy", &[])),
        ("dns".to_string(), Subject::client(crate::dns::setup::USER, &[])),
        // what the API server shows kubelets for pods/log, exec, nodes/proxy (kubeadm's
        // name; in system:masters, so every kubelet's SubjectAccessReview allows it)
        ("apiserver-kubelet-client".to_string(), Subject::client("kube-apiserver-kubelet-client", &[ADMIN_GROUP])),
    ];
    for node in nodes {
        out.push((format!("kubelet-{node}"), Subject::client(&format!("system:node:{node}"), &["system:nodes"])));
    }
    out
}

/// This machine's host name, lower case (a node name must be).
pub fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    match name.trim().to_ascii_lowercase() {
        n if n.is_empty() => "localhost".into(),
        n => n,
    }
}

/// The serving certificate's names: loopback, the host, the in-cluster names of the
/// `kubernetes` Service and its ClusterIP, the server URL's host, and the extras.
fn serving_sans(args: &CertsArgs) -> Vec<String> {
    let first_ip = Ipv4Addr::from(u32::from(args.service_cluster_ip_range.network()) + 1);
    let mut sans: Vec<String> = ["localhost", "127.0.0.1", &hostname()].iter().map(|s| s.to_string()).collect();
    for name in ["kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"] {
        sans.push(name.into());
    }
    sans.push(first_ip.to_string());
    // the address the `kubernetes` Service's endpoint names (`up` advertises it)
    sans.push(crate::host::machine_ip());
    if let Some(host) = url_host(&args.server) {
        sans.push(host);
    }
    sans.extend(args.apiserver_cert_extra_sans.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()));
    let mut seen = std::collections::HashSet::new();
    sans.retain(|s| seen.insert(s.to_ascii_lowercase()));
    sans
}

/// The host of `https://host:port/...` (brackets of an IPv6 address removed).
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    (!host.is_empty()).then(|| host.parse::<IpAddr>().map_or(host.to_string(), |ip| ip.to_string()))
}

/// What `ensure` found or made.
pub struct Report {
    pub layout: Layout,
    /// The CA was made now (so everything else was issued anew).
    pub new_ca: bool,
    /// Certificates issued now (file stems).
    pub issued: Vec<String>,
}

/// Mint what is missing or stale; see the module documentation.
pub fn ensure(args: &CertsArgs) -> anyhow::Result<Report> {
    let layout = Layout::new(&args.dir);
    for dir in [&layout.pki, &layout.kubeconfigs] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let nodes = if args.nodes.is_empty() { vec![hostname()] } else { args.nodes.clone() };
    let (ca, new_ca) = Ca::ensure(&layout.ca())?;
    let mut issued = Vec::new();
    let serving = Subject { sans: serving_sans(args), server: true, ..Subject::client("kube-apiserver", &[]) };
    if ca.ensure_cert(&layout.apiserver(), &serving)? {
        issued.push("apiserver".to_string());
    }
    issue::ensure_sa_key(&layout.sa_key(), &layout.sa_pub())?;
    for (name, subject) in clients(&nodes) {
        let pair = Pair::new(&layout.pki, &name);
        if ca.ensure_cert(&pair, &subject)? {
            issued.push(name.clone());
        }
        let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
        let (cert, key) = (read(&pair.cert)?, read(&pair.key)?);
        let creds = Credentials::ClientCert { ca: &ca.pem, cert: &cert, key: &key };
        let text = kubeconfig::render(&args.server, "ferrokube", &creds)?;
        let path = layout.kubeconfig(&name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            crate::auth::tls::write_private(&path, &text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(Report { layout, new_ca, issued })
}

/// The subcommand: mint, then say what is where.
pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let report = ensure(&args)?;
    let what = if report.issued.is_empty() { "none".to_string() } else { report.issued.join(", ") };
    let ca = if report.new_ca { "made" } else { "kept" };
    println!("CA {ca}: {}", report.layout.ca().cert.display());
    println!("issued now: {what}");
    println!("certificates and keys: {}", report.layout.pki.display());
    println!("kubeconfigs: {}", report.layout.kubeconfigs.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path) -> CertsArgs {
        CertsArgs {
            dir: dir.to_path_buf(),
            server: "https://127.0.0.1:6443".into(),
            nodes: vec!["node-a".into()],
            service_cluster_ip_range: "10.96.0.0/12".parse().unwrap(),
            apiserver_cert_extra_sans: vec!["api.example.com".into(), "192.0.2.7".into()],
        }
    }

    #[test]
    fn mints_every_identity_and_the_serving_names() {
        let dir = tempfile::tempdir().unwrap();
        let report = ensure(&args(dir.path())).unwrap();
        assert!(report.new_ca);
        let l = &report.layout;
        let (cn, orgs, sans) = issue::describe(&l.apiserver());
        assert_eq!((cn.as_str(), orgs.len()), ("kube-apiserver", 0));
        for want in [
            "localhost",
            "127.0.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "10.96.0.1",
            "api.example.com",
            "192.0.2.7",
            &hostname(),
        ] {
            assert!(sans.contains(&want.to_string()), "{want} in {sans:?}");
        }
        let who = |name: &str| {
            let (cn, orgs, _) = issue::describe(&Pair::new(&l.pki, name));
            (cn, orgs)
        };
        assert_eq!(who("admin"), ("kubernetes-admin".into(), vec!["system:masters".into()]));
        assert_eq!(who("scheduler"), ("system:kube-scheduler".into(), vec![]));
        assert_eq!(who("controller-manager"), ("system:kube-controller-manager".into(), vec![]));
        assert_eq!(who("proxy"), ("system:kube-proxy".into(), vec![]));
        assert_eq!(who("dns"), ("system:kube-dns".into(), vec![]));
        assert_eq!(who("kubelet-node-a"), ("system:node:node-a".into(), vec!["system:nodes".into()]));
        use std::os::unix::fs::PermissionsExt;
        for key in [l.ca().key, l.apiserver().key, l.sa_key(), l.admin().key, l.kubeconfig("admin")] {
            assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "{}", key.display());
        }
        let conf = std::fs::read_to_string(l.kubeconfig("kubelet-node-a")).unwrap();
        assert!(conf.contains("certificate-authority-data") && !conf.contains("insecure"), "{conf}");
    }

    #[test]
    fn a_second_run_keeps_what_is_good_and_reissues_what_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path());
        let first = ensure(&a).unwrap();
        let l = &first.layout;
        let ca = std::fs::read(l.ca().cert).unwrap();
        let admin = std::fs::read(l.admin().cert).unwrap();
        let sa = std::fs::read(l.sa_key()).unwrap();

        let again = ensure(&a).unwrap();
        assert!(!again.new_ca && again.issued.is_empty(), "issued {:?}", again.issued);
        assert_eq!(std::fs::read(l.ca().cert).unwrap(), ca);

        // a new name for the serving certificate: only it is issued again
        a.apiserver_cert_extra_sans.push("more.example.com".into());
        let renamed = ensure(&a).unwrap();
        assert_eq!(renamed.issued, ["apiserver"]);
        assert!(issue::describe(&l.apiserver()).2.contains(&"more.example.com".to_string()));

        // a certificate whose key went missing, or one another CA signed, is replaced
        std::fs::remove_file(l.admin().key).unwrap();
        assert_eq!(ensure(&a).unwrap().issued, ["admin"]);
        assert_ne!(std::fs::read(l.admin().cert).unwrap(), admin);
        let other = tempfile::tempdir().unwrap();
        let foreign = ensure(&args(other.path())).unwrap().layout;
        std::fs::copy(foreign.pki.join("proxy.crt"), l.pki.join("proxy.crt")).unwrap();
        std::fs::copy(foreign.pki.join("proxy.key"), l.pki.join("proxy.key")).unwrap();
        assert_eq!(ensure(&a).unwrap().issued, ["proxy"]);

        // without its CA, everything is new
        std::fs::remove_file(l.ca().key).unwrap();
        let fresh = ensure(&a).unwrap();
        assert!(fresh.new_ca);
        assert_eq!(fresh.issued.len(), 8, "{:?}", fresh.issued);
        assert_eq!(std::fs::read(l.sa_key()).unwrap(), sa, "the service account key outlives the CA");
    }

    #[test]
    fn server_url_hosts() {
        assert_eq!(url_host("https://10.0.0.5:6443").as_deref(), Some("10.0.0.5"));
        assert_eq!(url_host("https://[::1]:6443/x").as_deref(), Some("::1"));
        assert_eq!(url_host("https://api.example.com").as_deref(), Some("api.example.com"));
    }
}
