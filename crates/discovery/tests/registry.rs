//! Records on disk: round trips for every endpoint kind, listing past a corrupt file,
//! removal only with our nonce, pruning only what is stale.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use pipegate_discovery::{new_nonce, ErrorKind, InstanceMode, Record, State};
use pipegate_transport::{connect, ConnectOptions, Endpoint};
use support::{dead_pid, native_endpoint, registry, serve, temp_dir, within, Behavior, STEP};

fn record(listeners: &[&str], mode: InstanceMode, upstream: Option<&str>) -> Record {
    Record::new(
        listeners
            .iter()
            .map(|l| Endpoint::parse(l).unwrap())
            .collect(),
        mode,
        upstream.map(|u| Endpoint::parse(u).unwrap()),
        new_nonce().unwrap(),
    )
}

#[test]
fn every_endpoint_kind_round_trips_through_a_record() {
    let dir = temp_dir();
    let reg = registry(&dir);
    let cases = [
        record(&["npipe://pipegate"], InstanceMode::Agent, None),
        record(
            &[r"\\.\pipe\Docker_Engine", "127.0.0.1:0"],
            InstanceMode::Raw,
            Some("npipe:////./pipe/upstream"),
        ),
        record(
            &["unix:///run/user/1000/pipegate/my%20api.sock"],
            InstanceMode::Http,
            Some("unix:///tmp/a%3Fb.sock"),
        ),
        record(
            &["tcp://127.0.0.1:17788", "[::1]:9", "/tmp/x.sock"],
            InstanceMode::Http,
            Some("localhost:8080"),
        ),
    ];
    for (i, written) in cases.iter().enumerate() {
        let name = format!("kind{i}");
        reg.write(&name, written).unwrap();
        let back = reg.read(&name).unwrap().expect("the record is there");
        assert_eq!(&back, written, "record {i}");
        assert_eq!(back.url, written.listeners[0]);
        assert_eq!(back.url.to_string(), written.listeners[0].to_string());
    }
    let text = std::fs::read_to_string(reg.record_path("kind0").unwrap()).unwrap();
    assert!(text.contains(r#""url": "npipe://pipegate""#), "{text}");
    assert!(
        !text.contains("upstream"),
        "no upstream key for the agent: {text}"
    );
    let text = std::fs::read_to_string(reg.record_path("kind1").unwrap()).unwrap();
    assert!(text.contains(r#""url": "npipe://docker_engine""#), "{text}");
    assert!(text.contains(r#""upstream": "npipe://upstream""#), "{text}");
}

/// The native local endpoint (an `npipe://` URL on Windows, `unix://` elsewhere) survives
/// write → read → dial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_endpoint_survives_write_read_dial() {
    let dir = temp_dir();
    let reg = registry(&dir);
    let ep = native_endpoint(&dir, "dial");
    let server = serve(&ep, Behavior::Close).await;
    let written = Record::new(
        vec![server.endpoint.clone()],
        InstanceMode::Raw,
        None,
        new_nonce().unwrap(),
    );
    reg.write("dial", &written).unwrap();
    let back = reg.read("dial").unwrap().unwrap();
    assert_eq!(back.url, ep);
    within(
        STEP,
        connect(&back.url, &ConnectOptions::new()),
        "dial the read-back url",
    )
    .await
    .unwrap_or_else(|e| panic!("dial {}: {e}", back.url));
}

#[test]
fn a_missing_record_is_none_and_a_missing_directory_lists_empty() {
    let dir = temp_dir();
    let reg = registry(&dir);
    assert!(reg.read("nobody").unwrap().is_none());
    assert!(reg.list().unwrap().is_empty());
}

#[test]
fn bad_names_are_refused_before_touching_the_disk() {
    let dir = temp_dir();
    let reg = registry(&dir);
    for name in ["../escape", "", ".hidden", "a/b"] {
        assert_eq!(
            reg.read(name).unwrap_err().kind(),
            ErrorKind::InvalidName,
            "{name:?}"
        );
    }
    assert!(!reg.dir().exists(), "nothing was created");
}

#[test]
fn a_corrupt_record_is_a_clear_error_and_the_others_still_list() {
    let dir = temp_dir();
    let reg = registry(&dir);
    reg.write(
        "alpha",
        &record(&["127.0.0.1:1"], InstanceMode::Agent, None),
    )
    .unwrap();
    reg.write("gamma", &record(&["npipe://g"], InstanceMode::Agent, None))
        .unwrap();
    let broken = reg.dir().join("beta.json");
    std::fs::write(&broken, "{\"url\": \"npipe://b\", \"pid\": ").unwrap();
    // Not records: temp files, lock files, other files.
    std::fs::write(reg.dir().join(".alpha.json.tmp-1-2"), "junk").unwrap();
    std::fs::write(reg.dir().join("notes.txt"), "junk").unwrap();

    let err = reg.read("beta").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    let message = err.to_string();
    assert!(message.contains("beta.json"), "{message}");
    assert!(message.contains("is not a valid record"), "{message}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the JSON error is the source"
    );
    assert_eq!(err.path(), Some(broken.as_path()));

    let listed = reg.list().unwrap();
    let names: Vec<&str> = listed.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    assert!(listed[0].record.is_ok());
    assert_eq!(
        listed[1].record.as_ref().unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    assert!(listed[2].record.is_ok());
}

#[test]
fn writes_leave_no_temporary_files_and_replace_atomically() {
    let dir = temp_dir();
    let reg = registry(&dir);
    let first = record(&["127.0.0.1:1"], InstanceMode::Agent, None);
    let second = record(&["127.0.0.1:2"], InstanceMode::Http, Some("127.0.0.1:3"));
    reg.write("x", &first).unwrap();
    reg.write("x", &second).unwrap();
    assert_eq!(reg.read("x").unwrap().unwrap(), second);
    let files: Vec<String> = std::fs::read_dir(reg.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, ["x.json"], "only the record remains");
}

#[test]
fn removal_needs_our_nonce() {
    let dir = temp_dir();
    let reg = registry(&dir);
    let ours = record(&["127.0.0.1:1"], InstanceMode::Agent, None);
    reg.write("x", &ours).unwrap();
    assert!(!reg
        .remove_if_owned("x", &new_nonce().unwrap(), Duration::from_secs(5))
        .unwrap());
    assert_eq!(
        reg.read("x").unwrap().unwrap(),
        ours,
        "someone else's nonce removes nothing"
    );
    assert!(reg
        .remove_if_owned("x", &ours.nonce, Duration::from_secs(5))
        .unwrap());
    assert!(reg.read("x").unwrap().is_none());
    assert!(!reg
        .remove_if_owned("x", &ours.nonce, Duration::from_secs(5))
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_only_stale_records() {
    let dir = temp_dir();
    let reg = registry(&dir);
    let nonce = new_nonce().unwrap();
    let server = serve(
        &native_endpoint(&dir, "live"),
        Behavior::Nonce(nonce.clone()),
    )
    .await;
    let live = Record::new(
        vec![server.endpoint.clone()],
        InstanceMode::Agent,
        None,
        nonce,
    );
    reg.write("live", &live).unwrap();
    let mut stale = record(&["127.0.0.1:9"], InstanceMode::Agent, None);
    stale.pid = dead_pid();
    reg.write("stale", &stale).unwrap();
    // Alive (this process) but answering nothing: unhealthy, kept.
    let unhealthy = record(&["127.0.0.1:9"], InstanceMode::Http, Some("127.0.0.1:8"));
    reg.write("sick", &unhealthy).unwrap();
    std::fs::write(reg.dir().join("broken.json"), "not json").unwrap();

    let removed = within(STEP, reg.prune(Duration::from_secs(3)), "prune")
        .await
        .unwrap();
    assert_eq!(removed, ["stale"]);
    assert!(reg.read("stale").unwrap().is_none());
    assert_eq!(reg.read("live").unwrap().unwrap(), live);
    assert_eq!(reg.read("sick").unwrap().unwrap(), unhealthy);
    assert!(
        reg.dir().join("broken.json").exists(),
        "unreadable files are left to the user"
    );
    let status = within(STEP, reg.status("live", Duration::from_secs(3)), "status")
        .await
        .unwrap();
    assert_eq!(status.state, State::Running);
}
