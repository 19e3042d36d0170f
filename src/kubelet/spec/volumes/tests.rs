use std::os::unix::fs::PermissionsExt;

use k8s_openapi::api::core::v1::{ConfigMap, DownwardAPIVolumeFile, KeyToPath};
use serde_json::json;

use super::writer::File;
use super::*;

fn file(s: &str, mode: u32) -> File {
    File { data: s.as_bytes().to_vec(), mode }
}

fn payload(entries: &[(&str, &str)]) -> Payload {
    entries.iter().map(|(k, v)| (k.to_string(), file(v, 0o644))).collect()
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

fn pod(spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": "web-0", "namespace": "shop", "uid": "u1",
        "labels": {"app": "web"}}, "spec": spec}))
    .unwrap()
}

#[test]
fn atomic_writer_layout_and_updates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vol");
    let first = payload(&[("color", "blue"), ("conf/app.ini", "a=1")]);
    assert!(writer::write(&dir, &first, None).unwrap());
    let data = std::fs::read_link(dir.join("..data")).unwrap();
    assert!(data.to_string_lossy().starts_with("..20"), "{data:?}");
    assert_eq!(std::fs::read_link(dir.join("color")).unwrap(), Path::new("..data/color"));
    assert_eq!(read(&dir, "conf/app.ini"), "a=1");
    let mode = std::fs::metadata(dir.join("color")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);

    assert!(!writer::write(&dir, &first, None).unwrap(), "same content: nothing written");
    assert_eq!(std::fs::read_link(dir.join("..data")).unwrap(), data);

    let second = payload(&[("color", "green"), ("size", "L")]);
    assert!(writer::write(&dir, &second, None).unwrap());
    assert_eq!(read(&dir, "color"), "green");
    assert_eq!(read(&dir, "size"), "L");
    assert!(std::fs::symlink_metadata(dir.join("conf")).is_err(), "a name gone from the payload is removed");
    assert!(!dir.join(&data).exists(), "the old data directory is removed");
    let entries: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert_eq!(entries.len(), 4, "..data, one timestamped dir, two links: {entries:?}");

    let modes: Payload = [("secret".to_string(), file("x", 0o400))].into();
    writer::write(&dir, &modes, None).unwrap();
    assert_eq!(std::fs::metadata(dir.join("secret")).unwrap().permissions().mode() & 0o777, 0o400);
}

#[test]
fn atomic_writer_refuses_escaping_paths() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["../x", "/etc/passwd", "a/../../x", "..data", ""] {
        let p: Payload = [(bad.to_string(), file("x", 0o644))].into();
        assert!(writer::write(&tmp.path().join("v"), &p, None).is_err(), "{bad:?}");
    }
}

#[test]
fn config_map_items_modes_and_optional() {
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "cfg"},
        "data": {"a": "1", "b": "2"}, "binaryData": {"bin": "AAE="}}))
    .unwrap();
    let all = payload::config_map(Some(&cm), None, 0o600, false).unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), ["a", "b", "bin"]);
    assert_eq!(all["bin"].data, [0, 1]);
    assert_eq!(all["a"].mode, 0o600);
    let items = [
        KeyToPath { key: "a".into(), path: "dir/first".into(), mode: Some(0o400) },
        KeyToPath { key: "zz".into(), path: "z".into(), mode: None },
    ];
    let err = payload::config_map(Some(&cm), Some(&items), 0o644, false).unwrap_err();
    assert_eq!(err, "configmap references non-existent config key: zz");
    let some = payload::config_map(Some(&cm), Some(&items), 0o644, true).unwrap();
    assert_eq!(some.len(), 1);
    assert_eq!((some["dir/first"].data.as_slice(), some["dir/first"].mode), (&b"1"[..], 0o400));
    assert!(payload::config_map(None, None, 0o644, true).unwrap().is_empty());
}

#[test]
fn downward_api_files() {
    let p = pod(json!({"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}}}]}));
    let items: Vec<DownwardAPIVolumeFile> = serde_json::from_value(json!([
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
        {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}, "mode": 256},
    ]))
    .unwrap();
    let facts = PodFacts::default();
    let out = payload::downward_api(&p, &facts, &items, 0o644).unwrap();
    assert_eq!(out["labels"].data, b"app=\"web\"");
    assert_eq!(out["name"].data, b"web-0");
    assert_eq!((out["mem"].data.as_slice(), out["mem"].mode), (&b"64"[..], 0o400));
}

#[test]
fn hosts_file_content() {
    let p = pod(json!({"hostname": "db", "subdomain": "cluster", "containers": [],
        "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}]}));
    let text = hosts_file::content(&p, &["10.88.0.9".into()], "cluster.local", "");
    assert!(text.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"), "{text}");
    assert!(text.contains("\n10.88.0.9\tdb.cluster.shop.svc.cluster.local\tdb\n"), "{text}");
    assert!(text.ends_with("\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"), "{text}");
    let plain = hosts_file::content(&pod(json!({"containers": []})), &["10.88.0.9".into()], "cluster.local", "");
    assert!(plain.ends_with("10.88.0.9\tweb-0\n"), "{plain}");
    let host = hosts_file::content(
        &pod(json!({"hostNetwork": true, "containers": []})),
        &["1.2.3.4".into()],
        "c",
        "127.0.0.1 me\n",
    );
    assert_eq!(host, "127.0.0.1 me\n");
    let long = "a".repeat(62) + "-bcd";
    let (name, domain) = hosts_file::hostname_and_domain(&pod(json!({"hostname": long, "containers": []})), "x");
    assert_eq!((name, domain), ("a".repeat(62), None), "truncated to 63, trailing '-' dropped");
}

#[test]
fn host_path_types() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().display().to_string();
    let missing = format!("{base}/nope");
    assert_eq!(
        host::check_host_path(&missing, "Directory").unwrap_err(),
        format!("hostPath type check failed: {missing} is not a directory")
    );
    assert!(host::check_host_path(&missing, "").is_ok(), "no type: no check");
    let made = format!("{base}/made/deep");
    host::check_host_path(&made, "DirectoryOrCreate").unwrap();
    assert!(Path::new(&made).is_dir());
    let f = format!("{base}/sub/file");
    host::check_host_path(&f, "FileOrCreate").unwrap();
    assert!(Path::new(&f).is_file());
    assert!(host::check_host_path(&f, "Directory").is_err());
    assert_eq!(
        host::check_host_path(&made, "File").unwrap_err(),
        format!("hostPath type check failed: {made} is not a file")
    );
    assert!(host::check_host_path(&made, "Socket").unwrap_err().ends_with("is not a socket file"));
    assert!(host::check_host_path("/dev/null", "CharDevice").is_ok());
    assert!(host::check_host_path(&made, "Weird").is_err());
}

/// Unmounts and removes a pod directory however the test ends.
struct PodDir(tempfile::TempDir);

impl Drop for PodDir {
    fn drop(&mut self) {
        let _ = teardown_blocking(self.0.path());
    }
}

#[test]
fn mounts_sub_paths_hosts_and_termination_log() {
    let dir = PodDir(tempfile::tempdir().unwrap());
    let root = dir.0.path();
    let p = pod(json!({"containers": [{"name": "c",
    "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
    "volumeMounts": [
        {"name": "data", "mountPath": "/data"},
        {"name": "data", "mountPath": "/logs", "subPathExpr": "logs/$(POD)", "readOnly": true},
        {"name": "cfg", "mountPath": "/cfg", "mountPropagation": "HostToContainer"},
    ]}]}));
    let data_dir = root.join("volumes").join(EMPTY_DIR).join("data");
    empty_dir(&data_dir, "", None, None).unwrap();
    let cfg_dir = root.join("volumes").join(CONFIG_MAP).join("cfg");
    let volumes = HashMap::from([
        ("data".to_string(), Prepared { path: data_dir.clone(), read_only: false }),
        ("cfg".to_string(), Prepared { path: cfg_dir.clone(), read_only: true }),
    ]);
    std::fs::write(root.join(HOSTS_FILE), "x").unwrap();
    let pv = PodVolumes {
        pod_dir: root.to_path_buf(),
        facts: PodFacts::default(),
        volumes,
        hosts_file: Some(root.join(HOSTS_FILE)),
    };
    let c = &p.spec.as_ref().unwrap().containers[0];
    let mounts = pv.mounts(&p, c).unwrap();
    let by_path =
        |path: &str| mounts.iter().find(|m| m.container_path == path).unwrap_or_else(|| panic!("{path}: {mounts:?}"));
    assert_eq!(by_path("/data").host_path, data_dir.display().to_string());
    let logs = by_path("/logs");
    assert!(logs.readonly);
    assert_eq!(logs.host_path, std::fs::canonicalize(data_dir.join("logs/web-0")).unwrap().display().to_string());
    let cfg = by_path("/cfg");
    assert!(cfg.readonly, "API data volumes are read-only");
    assert_eq!(cfg.propagation, MountPropagation::PropagationHostToContainer as i32);
    assert_eq!(by_path("/etc/hosts").host_path, root.join(HOSTS_FILE).display().to_string());
    let log = by_path("/dev/termination-log");
    assert!(!log.readonly && Path::new(&log.host_path).is_file());
    assert!(log.host_path.starts_with(&root.join("containers/c").display().to_string()));

    let bad = pod(
        json!({"containers": [{"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/x", "subPathExpr": "$(NOPE)"}]}]}),
    );
    let err = pv.mounts(&bad, &bad.spec.as_ref().unwrap().containers[0]).unwrap_err();
    assert_eq!(err.to_string(), "missing value for NOPE");
    let escape = pod(
        json!({"containers": [{"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": "../../etc"}]}]}),
    );
    assert!(pv.mounts(&escape, &escape.spec.as_ref().unwrap().containers[0]).is_err());
    std::os::unix::fs::symlink("/etc", data_dir.join("out")).unwrap();
    let link = pod(
        json!({"containers": [{"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": "out"}]}]}),
    );
    let err = pv.mounts(&link, &link.spec.as_ref().unwrap().containers[0]).unwrap_err();
    assert!(err.to_string().contains("not within volume path"), "{err}");
    let unknown = pod(json!({"containers": [{"name": "c", "volumeMounts": [{"name": "zz", "mountPath": "/x"}]}]}));
    let err = pv.mounts(&unknown, &unknown.spec.as_ref().unwrap().containers[0]).unwrap_err();
    assert_eq!(err.to_string(), "cannot find volume \"zz\" to mount into container \"c\"");
}

#[test]
fn memory_empty_dir_is_tmpfs_and_teardown_unmounts_it() {
    let dir = PodDir(tempfile::tempdir().unwrap());
    let path = dir.0.path().join("volumes").join(EMPTY_DIR).join("cache");
    empty_dir(&path, "Memory", Some(1 << 20), Some(2000)).unwrap();
    empty_dir(&path, "Memory", Some(1 << 20), Some(2000)).unwrap();
    let ours: Vec<PathBuf> = mount_points().into_iter().filter(|m| m == &path).collect();
    assert_eq!(ours.len(), 1, "mounted once though prepared twice");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o2777);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 2000);
    let big = vec![0u8; 2 << 20];
    assert!(std::fs::write(path.join("big"), big).is_err(), "the size limit holds");
    teardown_blocking(dir.0.path()).unwrap();
    assert!(!mount_points().iter().any(|m| m.starts_with(dir.0.path())));
    assert!(!dir.0.path().exists());
    assert_eq!(unescape_octal("/a\\040b"), "/a b");
}

#[test]
fn projected_tokens_are_renewed_after_80_percent_of_their_life() {
    use base64::Engine;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"iat":1000,"exp":2000}"#);
    let jwt = format!("eyJhbGciOiJSUzI1NiJ9.{claims}.sig");
    assert!(token::fresh(jwt.as_bytes(), 1000));
    assert!(token::fresh(jwt.as_bytes(), 1799));
    assert!(!token::fresh(jwt.as_bytes(), 1800));
    assert!(!token::fresh(b"not a token", 0));
}
